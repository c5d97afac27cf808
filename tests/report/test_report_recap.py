"""The provisioning recap: parsed strictly, attached per host, shown in every output, never a verdict."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from conformance.cli import main
from conformance.report.errors import ReportError
from conformance.report.html import render_html
from conformance.report.markdown import render_summary
from conformance.report.model import Results, load, summarize
from conformance.report.recap import attach_provisioning, load_recap, parse_recap
from conformance.report.validate import validate
from tests.report.hostsdir_fixtures import RUN_ID, host_folder, per_host

DIFF = "--- before: /etc/containers/storage.conf\n+++ after\n@@ -1 +1 @@\n-driver = \"vfs\"\n+driver = \"overlay\"\n"


def stats(changed: int, tasks: list[dict[str, Any]] | None = None, failed: int = 0,
          unreachable: bool = False) -> dict[str, Any]:
    return {"ok": 10, "changed": changed, "failed": failed, "skipped": 1, "unreachable": unreachable,
            "changed_tasks": tasks or []}


def recap() -> dict[str, Any]:
    """site.yml as the contract describes it: provision, provision again (idempotence), run the suite."""
    return {
        "format": "conformance-ansible-recap/1", "playbook": "playbooks/site.yml",
        "plays": [
            {"name": "Choose the run", "pass": None, "hosts": {"localhost": stats(1)}},
            {"name": "Provision container hosts", "pass": None,
             "hosts": {"alpha": stats(12, [{"task": "engines : Install runc", "diff": None}] * 12),
                       "beta": stats(14), "gamma": stats(3)}},
            {"name": "Provision container hosts", "pass": "idempotence",
             "hosts": {"alpha": stats(0),
                       "beta": stats(2, [{"task": "engines : Configure podman storage", "diff": DIFF},
                                         {"task": "docker : Restart dockerd", "diff": None}]),
                       "gamma": stats(0, failed=1)}},
            {"name": "Run the suite", "pass": None,
             "hosts": {"alpha": stats(5), "beta": stats(5)}},
        ],
    }


def test_each_host_gets_its_idempotence() -> None:
    found = parse_recap(recap())
    assert found["alpha"] == {"idempotent": True, "changed_first": 12, "changed_second": 0, "changed_tasks": []}
    assert found["beta"]["idempotent"] is False
    assert found["beta"]["changed_first"] == 14  # the suite's own play after the second pass is not provisioning
    assert found["beta"]["changed_second"] == 2
    assert [t["task"] for t in found["beta"]["changed_tasks"]] == ["engines : Configure podman storage",
                                                                  "docker : Restart dockerd"]
    assert found["beta"]["changed_tasks"][0]["diff"] == DIFF
    # a second pass that failed on the host proves nothing either way
    assert found["gamma"] == {"idempotent": None, "changed_first": 3, "changed_second": None, "changed_tasks": []}
    assert "localhost" not in found  # the controller's "Choose the run" play is not provisioning


def test_without_a_second_pass_idempotence_is_not_checked() -> None:
    data = recap()
    data["plays"] = data["plays"][:2]
    assert parse_recap(data)["alpha"]["idempotent"] is None


def test_a_named_first_pass_is_used_as_named() -> None:
    data = recap()
    data["plays"][1]["pass"] = "first"
    data["plays"][3]["hosts"]["alpha"]["changed"] = 99  # not a provisioning pass: not counted
    assert parse_recap(data)["alpha"]["changed_first"] == 12


@pytest.mark.parametrize(("mutate", "problem"), [
    (lambda d: d.update(format="conformance-ansible-recap/2"), "$.format"),
    (lambda d: d.pop("plays"), "plays"),
    (lambda d: d["plays"][1]["hosts"]["alpha"].update(changed=-1), "$.plays[1].hosts.alpha.changed"),
    (lambda d: d["plays"][2]["hosts"]["beta"]["changed_tasks"][0].pop("task"), "task"),
    (lambda d: d["plays"][1].update(hosts=[]), "$.plays[1].hosts"),
    (lambda d: d["plays"][1]["hosts"]["alpha"].update(unreachable="no"), "unreachable"),
])
def test_a_malformed_recap_is_refused_naming_file_and_problem(tmp_path: Path, mutate: Any, problem: str) -> None:
    data = copy.deepcopy(recap())
    mutate(data)
    path = tmp_path / "provision-recap.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ReportError) as caught:
        load_recap(path)
    assert str(path) in str(caught.value) and problem in str(caught.value)


def test_a_recap_that_is_not_json_or_missing(tmp_path: Path) -> None:
    path = tmp_path / "recap.json"
    path.write_text('{"format": ')
    with pytest.raises(ReportError, match=r"recap.json: not JSON: line 1"):
        load_recap(path)
    with pytest.raises(ReportError, match="cannot read"):
        load_recap(tmp_path / "missing.json")


def with_provisioning(sample: Results) -> Results:
    both = Results(sample.run, sample.clauses, (*per_host(sample, "alpha").hosts, *per_host(sample, "beta").hosts),
                   (*per_host(sample, "alpha").results, *per_host(sample, "beta").results))
    return attach_provisioning(both, parse_recap(recap()))


def test_attached_provisioning_is_in_results_json_and_changes_no_verdict(sample: Results) -> None:
    results = with_provisioning(sample)
    data = results.to_dict()
    validate(data, "with provisioning")
    beta = next(h for h in data["hosts"] if h["name"] == "beta")
    assert beta["provisioning"]["idempotent"] is False
    assert Results.from_dict(data) == results
    without = Results(results.run, results.clauses, tuple(h.__class__(h.name, h.spec, h.reachable, h.reason, h.facts)
                                                          for h in results.hosts), results.results)
    assert summarize(results) == summarize(without)
    assert summarize(results).conformant
    assert results.run.options["merge_notes"] == [
        "provision recap: host 'gamma' was provisioned but this report has no record of it"]


def test_html_shows_provisioning_per_host(sample: Results) -> None:
    page = render_html(with_provisioning(sample))
    hosts = page[page.index('id="hosts"'): page.index('id="counts"')]
    assert 'data-provisioning="idempotent"' in hosts and 'data-provisioning="not-idempotent"' in hosts
    assert "NOT idempotent: 2 tasks changed on the second run" in hosts
    assert "engines : Configure podman storage" in hosts and "driver = &#34;overlay&#34;" in hosts
    assert "idempotent (second run changed=0; first run changed=12)" in hosts


def test_summary_md_has_a_line_per_host_and_the_changed_tasks(sample: Results) -> None:
    text = render_summary(with_provisioning(sample))
    section = text[text.index("## Provisioning"): text.index("## Merge notes")]
    assert "host 'gamma' was provisioned but this report has no record of it" in text
    lines = [line for line in section.splitlines() if line.startswith("- ")]
    assert len(lines) == 2
    assert "`alpha`: idempotent (second run changed=0" in lines[0]
    assert "`beta`: NOT idempotent: 2 tasks changed on the second run" in lines[1]
    assert "`engines : Configure podman storage`" in section and '+driver = "overlay"' in section
    assert "`docker : Restart dockerd`" in section


def test_cli_merge_with_a_recap(tmp_path: Path, sample: Results) -> None:
    out = tmp_path / "reports" / RUN_ID
    hosts = out / "hosts"
    host_folder(hosts, "alpha", per_host(sample, "alpha"), {"state": "ran", "rc": 0, "message": ""})
    host_folder(hosts, "beta", per_host(sample, "beta"), {"state": "ran", "rc": 0, "message": ""})
    (out / "provision-recap.json").write_text(json.dumps(recap()))
    code = main(["report", "merge", "--hosts-dir", str(hosts), "--provision-recap", str(out / "provision-recap.json"),
                 "-o", str(out)])
    assert code == 0  # not idempotent on beta, and still conformant: provisioning is shown, not judged
    merged = load(out / "results.json")
    assert [h.provisioning["idempotent"] if h.provisioning else None for h in merged.hosts] == [True, False]
    assert "NOT idempotent" in (out / "summary.md").read_text()
    ET.parse(out / "junit.xml")
    (out / "bad.json").write_text("{}")
    assert main(["report", "merge", "--hosts-dir", str(hosts), "--provision-recap", str(out / "bad.json"),
                 "-o", str(tmp_path / "other")]) == 2
