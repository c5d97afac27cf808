"""The provisioning recap: what Ansible changed on each host, and whether a second pass changed nothing.

playbooks/site.yml provisions, provisions again with ``conformance_provision_pass=idempotence`` and
then runs the suite; the ``conformance_recap`` callback writes per play and host what ran and what
changed (format ``conformance-ansible-recap/1``, see the shared contract). Here each host's plays
become one ``provisioning`` entry of its host record. A provisioning that is not idempotent is a
finding about the playbook, shown beside the host; it never changes a clause's verdict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from conformance.report._io import read_json
from conformance.report.errors import ReportError
from conformance.report.model import Results

RECAP_FORMAT = "conformance-ansible-recap/1"
RECAP_SCHEMA = "schema/recap.schema.json"
#: The value of the play variable conformance_provision_pass on the second, must-change-nothing pass.
IDEMPOTENCE_PASS = "idempotence"

Provisioning = dict[str, Any]


def load_recap(path: Path) -> dict[str, Provisioning]:
    """Read a recap file; a missing, non-JSON or malformed one raises ReportError naming the file and the spot."""
    data = read_json(path, "the provisioning recap")
    return parse_recap(data, str(path))


def _validate(data: object, origin: str) -> None:
    text = resources.files("conformance.report").joinpath(RECAP_SCHEMA).read_text(encoding="utf-8")
    errors = list(Draft202012Validator(json.loads(text)).iter_errors(data))
    if errors:
        best = best_match(errors)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ReportError(f"{origin}: not a {RECAP_FORMAT} provisioning recap: {best.json_path}: {best.message}{more}")


def parse_recap(data: object, origin: str = "recap") -> dict[str, Provisioning]:
    """Each host's provisioning entry: ``{"idempotent", "changed_first", "changed_second", "changed_tasks"}``.

    Plays whose ``pass`` is ``idempotence`` are the second pass: their changed count is
    ``changed_second`` and their changed tasks (with diffs) are ``changed_tasks``. The first pass is the
    plays whose ``pass`` names another value; when none does, the plays without a pass before the
    first idempotence play that have the name of an idempotence play (the second pass imports the same
    provisioning playbook again), or, when no name matches, every play without a pass before it.
    site.yml's other plays (choosing the run on the controller, running the suite, collecting) are
    not provisioning and are left out. A host the second pass did not complete on (absent, failed or
    unreachable there) gets ``idempotent: null`` and ``changed_second: null``: not checked.
    """
    _validate(data, origin)
    assert isinstance(data, Mapping)
    plays: list[Mapping[str, Any]] = list(data["plays"])
    second = [p for p in plays if p["pass"] == IDEMPOTENCE_PASS]
    named_first = [p for p in plays if p["pass"] not in (None, IDEMPOTENCE_PASS)]
    if named_first:
        first = named_first
    else:
        before = [p for p in plays[: plays.index(second[0]) if second else len(plays)] if p["pass"] is None]
        names = {p["name"] for p in second}
        first = [p for p in before if p["name"] in names] or before
    hosts = sorted({h for p in [*first, *second] for h in p["hosts"]})
    found: dict[str, Provisioning] = {}
    for host in hosts:
        changed_first = sum(p["hosts"][host]["changed"] for p in first if host in p["hosts"])
        runs = [p["hosts"][host] for p in second if host in p["hosts"]]
        complete = bool(runs) and all(r["failed"] == 0 and not r["unreachable"] for r in runs)
        changed_second = sum(r["changed"] for r in runs) if complete else None
        tasks = [{"task": t["task"], "diff": t["diff"]} for r in runs for t in r["changed_tasks"]]
        found[host] = {"idempotent": (changed_second == 0 and not tasks) if complete else None,
                       "changed_first": changed_first, "changed_second": changed_second, "changed_tasks": tasks}
    return found


def attach_provisioning(results: Results, provisioning: Mapping[str, Provisioning]) -> Results:
    """``results`` with each host's provisioning entry; recap hosts with no host record are noted in the run.

    The notes go to ``run.options["merge_notes"]`` (the report shows them), so a host that was provisioned
    but never reported is not silently dropped.
    """
    hosts = tuple(replace(h, provisioning=dict(provisioning[h.name])) if h.name in provisioning else h
                  for h in results.hosts)
    known = {h.name for h in results.hosts}
    notes = [f"provision recap: host {name!r} was provisioned but this report has no record of it"
             for name in sorted(provisioning) if name not in known]
    run = results.run
    if notes:
        options = dict(run.options)
        options["merge_notes"] = [*options.get("merge_notes", []), *notes]
        run = replace(run, options=options)
    return replace(results, run=run, hosts=hosts)


def provisioning_text(provisioning: Mapping[str, object] | None) -> tuple[str, str]:
    """A host's provisioning as a state (idempotent, not-idempotent, unchecked, none) and one line of words."""
    if provisioning is None:
        return "none", "no provisioning recap"
    first = provisioning.get("changed_first")
    tasks = provisioning.get("changed_tasks") or []
    count = len(tasks) if isinstance(tasks, list) else 0
    if provisioning.get("idempotent") is True:
        return "idempotent", f"idempotent (second run changed=0; first run changed={first})"
    if provisioning.get("idempotent") is False:
        return "not-idempotent", (f"NOT idempotent: {count} task{'' if count == 1 else 's'} changed on the second "
                                  f"run (changed={provisioning.get('changed_second')}; first run changed={first})")
    return "unchecked", f"idempotence not checked: no complete second run (first run changed={first})"
