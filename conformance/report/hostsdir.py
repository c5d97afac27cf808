"""Merging a fan-out run: one folder per inventory host, written by playbooks/run.yml, into one report.

``reports/<run-id>/hosts/<host>/`` holds the host's results.json (and junit.xml, report.html, summary.md,
run.log) when its run finished, and always a status.json: ``{"host", "state": "ran" | "failed" |
"unreachable", "rc", "message"}``. A host whose results never arrived must not vanish from the merged
report: it becomes one "[host] reachability" record, ``unreachable`` (Ansible could not reach it, or
nothing at all was recorded) or ``error`` (its run failed), with status.json's message and rc, so the
merged run is not conformant and every output says why.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from conformance import __version__
from conformance.report._io import read_json
from conformance.report.errors import ReportError
from conformance.report.merge import merge
from conformance.report.model import HostRecord, Result, Results, Run, load
from conformance.verdicts import Level, Verdict

STATUS_JSON = "status.json"
RESULTS_JSON = "results.json"
RUN_LOG = "run.log"
STATES = ("ran", "failed", "unreachable")
#: What `conformance run` names the local host when it was not told --as-host.
LOCAL_NAME = "local"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LOG_TAIL = 2000  # characters of run.log kept with a failed host's record


def is_run_id(text: str) -> bool:
    """Whether ``text`` can be a run id (and so a folder name under reports/)."""
    return bool(_RUN_ID.match(text)) and text != "latest"


@dataclass(frozen=True, slots=True)
class HostStatus:
    """A host's status.json."""

    host: str
    state: str
    rc: int | None
    message: str


def read_status(folder: Path) -> HostStatus | None:
    """The host folder's status.json, None when there is none; a malformed one raises ReportError."""
    path = folder / STATUS_JSON
    if not path.exists():
        return None
    data = read_json(path)
    if not isinstance(data, Mapping):
        raise ReportError(f"{path}: $: expected an object with host, state, rc and message")
    state, rc, message, host = data.get("state"), data.get("rc"), data.get("message"), data.get("host", folder.name)
    if state not in STATES:
        raise ReportError(f"{path}: $.state: {state!r} is not one of {', '.join(STATES)}")
    if rc is not None and (isinstance(rc, bool) or not isinstance(rc, int)):
        raise ReportError(f"{path}: $.rc: {rc!r} is not an integer or null")
    if message is not None and not isinstance(message, str):
        raise ReportError(f"{path}: $.message: {message!r} is not a string or null")
    if not isinstance(host, str) or not host:
        raise ReportError(f"{path}: $.host: {host!r} is not a host name")
    return HostStatus(host, state, rc, message or "")


def _log_tail(folder: Path) -> str | None:
    path = folder / RUN_LOG
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text[-_LOG_TAIL:] if text else None


def host_record(host: str, verdict: Verdict, message: str, status: HostStatus | None, folder: Path | None,
                test: str | None = None) -> Result:
    """One result for a host whose results are missing (or whose run failed).

    It has the shape `conformance run` gives an unreachable host: no clause, no implementation, the
    reason as message and actual; status.json's state and rc, and the end of run.log, as context.
    """
    context: dict[str, Any] = {"state": status.state if status else "missing", "rc": status.rc if status else None}
    tail = _log_tail(folder) if folder is not None else None
    if tail:
        context["run.log (end)"] = tail
    return Result(clause=None, test=test or f"[{host}] reachability", host=host, implementation=None, fault=None,
                  level=None, area=None, verdict=verdict, duration=0.0, message=message,
                  expected="the host runs the suite and its results.json is collected", actual=message,
                  context=context)


def _rc(status: HostStatus) -> str:
    return f"rc {status.rc}" if status.rc is not None else "no rc"


def _missing(host: str, folder: Path, status: HostStatus | None) -> tuple[Verdict, str]:
    """The verdict and words for a host folder without results.json."""
    if status is None:
        return Verdict.UNREACHABLE, f"{folder} has neither {RESULTS_JSON} nor {STATUS_JSON}: nothing was collected"
    said = f": {status.message}" if status.message else ""
    if status.state == "unreachable":
        return Verdict.UNREACHABLE, f"{host} was unreachable ({_rc(status)}){said}"
    if status.state == "failed":
        return Verdict.ERROR, f"the run on {host} failed ({_rc(status)}){said}"
    return Verdict.ERROR, (f"{STATUS_JSON} says the run on {host} finished ({_rc(status)}) but no {RESULTS_JSON} "
                           f"was collected{said}")


def _named(results: Results, folder: str, notes: list[str], where: Path) -> Results:
    """Results whose only host is the unnamed "local" renamed to its folder's name, saying so."""
    names = {h.name for h in results.hosts}
    if LOCAL_NAME in names and folder != LOCAL_NAME and folder not in names:
        notes.append(f"{where} names its host {LOCAL_NAME!r}: renamed to {folder!r} (its folder); "
                     f"`conformance run --as-host {folder}` names it at the source")
        hosts = tuple(replace(h, name=folder) if h.name == LOCAL_NAME else h for h in results.hosts)
        rows = tuple(replace(r, host=folder) if r.host == LOCAL_NAME else r for r in results.results)
        results = replace(results, hosts=hosts, results=rows)
        names = {h.name for h in results.hosts}
    if folder not in names:
        notes.append(f"{where} holds host(s) {', '.join(sorted(names)) or 'none'}, not {folder!r}")
    return results


def _selected(results: Results) -> Results:
    """A per-host run's hosts with the run's own selection (areas, impls, level).

    The merged report shows it, and judges each host at its own level.
    """
    options = results.run.options
    selection = {"areas": list(options.get("areas") or []) or None, "impls": list(options.get("impls") or []) or None,
                 "level": str(results.run.level), "source": "run"}
    return replace(results, hosts=tuple(h if h.selection is not None else replace(h, selection=dict(selection))
                                        for h in results.hosts))


def _distinct_ids(runs: list[tuple[str, Results]]) -> list[Results]:
    """The runs, each with a distinct id.

    Per-host runs of one fan-out share the run id: each gets its folder as a suffix, so merged_from and
    the merge's bookkeeping can tell them apart.
    """
    counts: dict[str, int] = {}
    for _, results in runs:
        counts[results.run.id] = counts.get(results.run.id, 0) + 1
    out = []
    for folder, results in runs:
        if counts[results.run.id] > 1:
            suffix = re.sub(r"[^A-Za-z0-9._-]", "-", folder)
            out.append(replace(results, run=replace(results.run, id=f"{results.run.id}.{suffix}")))
        else:
            out.append(results)
    return out


def _empty_run(run_id: str, command: Sequence[str]) -> Results:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    run = Run(id=run_id, started=now, stopped=now, suite_version=__version__, git_sha=None, command=tuple(command),
              level=Level.MUST, options={"merge_conflicts": [], "merge_replaced_results": 0, "merged_options": {}})
    return Results(run=run, clauses={}, hosts=(), results=())


def merge_hosts_dir(hosts_dir: Path, run_id: str, expect: Iterable[str] = (), command: Sequence[str] = ()) -> Results:
    """One Results for every host folder of ``hosts_dir`` and every ``expect``ed host.

    A folder with results.json contributes its results (a host still named "local" is renamed to the
    folder's name, with a note); if its status.json says the run failed, one ``error`` "[host] run"
    record is added, since a failed run's results may be partial. A folder without results.json, or an
    expected host without a folder, becomes one "[host] reachability" record (``unreachable``, or
    ``error`` when status.json says ``failed``). Notes go to ``run.options["merge_notes"]`` and each
    host's status to ``run.options["host_status"]``. Raises ReportError for unreadable input or when
    there is nothing to merge.
    """
    hosts_dir = Path(hosts_dir)
    if not hosts_dir.is_dir():
        raise ReportError(f"{hosts_dir}: not a directory (expected reports/<run-id>/hosts/ with one folder per host)")
    folders = sorted(p for p in hosts_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    expected = list(dict.fromkeys(expect))
    if not folders and not expected:
        raise ReportError(f"{hosts_dir}: no host folders and no --expect-host: nothing to merge")
    notes: list[str] = []
    ran: list[tuple[str, Results]] = []
    extra_hosts: list[HostRecord] = []
    extra_results: list[Result] = []
    statuses: dict[str, dict[str, Any]] = {}
    for folder in folders:
        name = folder.name
        status = read_status(folder)
        if status is not None:
            statuses[name] = {"state": status.state, "rc": status.rc, "message": status.message}
            if status.host != name:
                notes.append(f"{folder / STATUS_JSON} names host {status.host!r}; the folder's name {name!r} is used")
        else:
            statuses[name] = {"state": "missing", "rc": None, "message": f"no {STATUS_JSON}"}
        results_path = folder / RESULTS_JSON
        if results_path.exists():
            ran.append((name, _selected(_named(load(results_path), name, notes, results_path))))
            if status is not None and status.state != "ran":
                said = f": {status.message}" if status.message else ""
                extra_results.append(host_record(
                    name, Verdict.ERROR, f"the run on {name} ended as {status.state} ({_rc(status)}){said}; its "
                    "results may be partial", status, folder, test=f"[{name}] run"))
            continue
        verdict, message = _missing(name, folder, status)
        extra_hosts.append(HostRecord(name, f"ansible://{name}", verdict is not Verdict.UNREACHABLE,
                                      message if verdict is Verdict.UNREACHABLE else None, {}))
        extra_results.append(host_record(name, verdict, message, status, folder))
    for name in expected:
        if not (hosts_dir / name).is_dir():
            message = (f"expected host {name} has no folder {hosts_dir / name}: nothing was collected from it "
                       "(not targeted, or the playbook stopped before writing its status)")
            statuses[name] = {"state": "missing", "rc": None, "message": message}
            extra_hosts.append(HostRecord(name, f"ansible://{name}", False, message, {}))
            extra_results.append(host_record(name, Verdict.UNREACHABLE, message, None, None))
    inputs = _distinct_ids(ran)
    merged = merge(inputs, run_id, command) if inputs else _empty_run(run_id, command)
    known = {h.name for h in merged.hosts}
    for record in extra_hosts:
        if record.name in known:
            notes.append(f"host {record.name!r} has a folder without results but is named in another folder's "
                         "results; both are kept")
    order = {name: i for i, name in enumerate(dict.fromkeys([*(f.name for f in folders), *expected]))}
    hosts = sorted([*merged.hosts, *(h for h in extra_hosts if h.name not in known)],
                   key=lambda h: order.get(h.name, len(order)))  # folder order, then the expected ones
    options = {**merged.run.options, "hosts_dir": str(hosts_dir), "expected_hosts": expected,
               "host_status": statuses, "merge_notes": [*merged.run.options.get("merge_notes", []), *notes]}
    run = replace(merged.run, id=run_id, command=tuple(command) or merged.run.command, options=options)
    return replace(merged, run=run, hosts=tuple(hosts), results=(*merged.results, *extra_results))
