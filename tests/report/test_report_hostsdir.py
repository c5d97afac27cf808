"""`report merge --hosts-dir`: a fan-out's per-host folders in one report, and no host silently missing."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance.cli import main
from conformance.report.errors import ReportError
from conformance.report.hostsdir import merge_hosts_dir, read_status
from conformance.report.junit import build_junit
from conformance.report.model import Results, load
from conformance.report.validate import validate
from conformance.verdicts import Verdict
from tests.report.hostsdir_fixtures import RUN_ID, host_folder, per_host


@pytest.fixture
def fleet(tmp_path: Path, sample: Results) -> Path:
    """reports/<run-id>/hosts/ with one host of each kind run.yml can leave behind."""
    hosts = tmp_path / "reports" / RUN_ID / "hosts"
    host_folder(hosts, "alpha", per_host(sample, "alpha", "6.6.0", "v2"), {"state": "ran", "rc": 0, "message": ""})
    host_folder(hosts, "beta", per_host(sample, "local", "5.15.0", "hybrid"), {"state": "ran", "rc": 0, "message": ""})
    host_folder(hosts, "gamma", None, {"state": "failed", "rc": 2, "message": "conformance run exited 2"},
                log="ERROR: probe crashed\nTraceback ...\n")
    host_folder(hosts, "delta", None, {"state": "unreachable", "rc": None,
                                       "message": "ssh: connect to host delta port 22: No route to host"})
    host_folder(hosts, "epsilon")  # a folder, but nothing in it
    return hosts


def own(results: Results, host: str) -> list[tuple[str, Verdict]]:
    return [(r.test, r.verdict) for r in results.results if r.host == host and r.clause is None]


def test_every_kind_of_host_folder(fleet: Path) -> None:
    merged = merge_hosts_dir(fleet, RUN_ID, expect=["alpha", "zeta"], command=["conformance", "report", "merge"])
    validate(merged.to_dict(), "merged")
    assert merged.run.id == RUN_ID
    assert [h.name for h in merged.hosts] == ["alpha", "beta", "delta", "epsilon", "gamma", "zeta"]
    assert own(merged, "alpha") == own(merged, "beta") == []
    assert own(merged, "gamma") == [("[gamma] reachability", Verdict.ERROR)]
    assert own(merged, "delta") == [("[delta] reachability", Verdict.UNREACHABLE)]
    assert own(merged, "epsilon") == [("[epsilon] reachability", Verdict.UNREACHABLE)]
    assert own(merged, "zeta") == [("[zeta] reachability", Verdict.UNREACHABLE)]
    gamma = next(r for r in merged.results if r.host == "gamma")
    assert "rc 2" in gamma.message and "conformance run exited 2" in gamma.message
    assert gamma.context["rc"] == 2 and gamma.context["state"] == "failed"
    assert "probe crashed" in gamma.context["run.log (end)"]
    delta = next(r for r in merged.results if r.host == "delta")
    assert "No route to host" in delta.message
    assert "expected host zeta" in next(r for r in merged.results if r.host == "zeta").message
    assert not merged.summary.conformant
    assert merged.run.options["host_status"]["gamma"] == {"state": "failed", "rc": 2,
                                                          "message": "conformance run exited 2"}
    # per-host runs share the fan-out's run id: the merge tells them apart by folder
    assert merged.run.merged_from == (f"{RUN_ID}.alpha", f"{RUN_ID}.beta")


def test_a_host_still_named_local_takes_its_folder_name(fleet: Path) -> None:
    merged = merge_hosts_dir(fleet, RUN_ID)
    assert "local" not in {h.name for h in merged.hosts} | {r.host for r in merged.results}
    beta = merged.host("beta")
    assert beta is not None and beta.facts["kernel"] == {"release": "5.15.0"}
    assert any("names its host 'local': renamed to 'beta'" in n for n in merged.run.options["merge_notes"])
    assert {r.host for r in merged.results if r.clause} == {"alpha", "beta"}


def test_only_ran_hosts_conform(tmp_path: Path, sample: Results) -> None:
    hosts = tmp_path / "hosts"
    host_folder(hosts, "alpha", per_host(sample, "alpha"), {"state": "ran", "rc": 0, "message": ""})
    host_folder(hosts, "beta", per_host(sample, "beta"))  # no status.json: ran is assumed from results.json
    merged = merge_hosts_dir(hosts, RUN_ID, expect=["alpha", "beta"])
    assert merged.summary.conformant
    assert [h.selection for h in merged.hosts] == [
        {"areas": None, "impls": ["kernel", "ref"], "level": "MUST", "source": "run"}] * 2


def test_a_failed_run_with_results_keeps_them_and_says_it_failed(tmp_path: Path, sample: Results) -> None:
    hosts = tmp_path / "hosts"
    host_folder(hosts, "alpha", per_host(sample, "alpha"), {"state": "failed", "rc": 2, "message": "harness error"})
    merged = merge_hosts_dir(hosts, RUN_ID)
    validate(merged.to_dict(), "merged")
    assert own(merged, "alpha") == [("[alpha] run", Verdict.ERROR)]
    assert any(r.clause for r in merged.results if r.host == "alpha")
    assert not merged.summary.conformant
    cases = {c.get("name"): c for c in build_junit(merged).iter("testcase")}
    error = cases["[alpha] run"].find("error")
    assert error is not None and error.get("type") == "error" and "harness error" in error.get("message", "")


@pytest.mark.parametrize(("text", "problem"), [
    ("{", "not JSON"),
    ('{"host": "alpha", "state": "gone", "rc": 0, "message": ""}', "$.state"),
    ('{"host": "alpha", "state": "ran", "rc": "0", "message": ""}', "$.rc"),
    ('["ran"]', "expected an object"),
])
def test_a_malformed_status_is_bad_input(tmp_path: Path, text: str, problem: str) -> None:
    folder = tmp_path / "hosts" / "alpha"
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(text)
    with pytest.raises(ReportError, match=r"status\.json") as caught:
        read_status(folder)
    assert problem in str(caught.value)


def test_nothing_to_merge_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "hosts").mkdir()
    with pytest.raises(ReportError, match="nothing to merge"):
        merge_hosts_dir(tmp_path / "hosts", RUN_ID)
    with pytest.raises(ReportError, match="not a directory"):
        merge_hosts_dir(tmp_path / "nowhere", RUN_ID)


def test_cli_writes_every_output_points_latest_and_exits_by_conformance(
        fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = fleet.parent
    code = main(["report", "merge", "--hosts-dir", str(fleet), "--expect-host", "zeta", "-o", str(out)])
    assert code == 1
    assert {"results.json", "junit.xml", "report.html", "summary.md"} <= {p.name for p in out.iterdir()}
    latest = out.parent / "latest"
    assert latest.is_symlink() and os.readlink(latest) == RUN_ID
    results = load(out / "results.json")  # validated against the schema on the way in
    assert results.run.id == RUN_ID
    cases = {c.get("name"): c for c in ET.parse(out / "junit.xml").getroot().iter("testcase")}
    for host, kind in (("gamma", "error"), ("delta", "unreachable"), ("epsilon", "unreachable"),
                       ("zeta", "unreachable")):
        error = cases[f"[{host}] reachability"].find("error")
        assert error is not None and error.get("type") == kind, host
    assert "conformance run exited 2" in (cases["[gamma] reachability"].find("error").text or "")  # type: ignore[union-attr]
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# ❌ Conformant: no")
    assert "`gamma` (run failed)" in summary and "`delta` (unreachable)" in summary
    assert "No route to host" in summary and "renamed to" in summary
    html = (out / "report.html").read_text()
    assert "run failed" in html and "No route to host" in html
    assert "NOT conformant" in capsys.readouterr().out


def test_cli_exit_0_when_every_host_conforms(tmp_path: Path, sample: Results) -> None:
    hosts = tmp_path / RUN_ID / "hosts"
    host_folder(hosts, "alpha", per_host(sample, "alpha"), {"state": "ran", "rc": 0, "message": ""})
    assert main(["report", "merge", "--hosts-dir", str(hosts), "-o", str(tmp_path / RUN_ID)]) == 0
    assert json.loads((tmp_path / RUN_ID / "results.json").read_text())["summary"]["conformant"] is True


def test_cli_bad_input_exits_2(tmp_path: Path, sample: Results, capsys: pytest.CaptureFixture[str]) -> None:
    hosts = tmp_path / "hosts"
    folder = host_folder(hosts, "alpha", per_host(sample, "alpha"))
    (folder / "results.json").write_text('{"schema_version": 1}')
    assert main(["report", "merge", "--hosts-dir", str(hosts), "-o", str(tmp_path / "out")]) == 2
    assert "results.json" in capsys.readouterr().err
    assert main(["report", "merge", "-o", str(tmp_path / "out")]) == 2
    assert main(["report", "merge", "--expect-host", "a", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    assert main(["report", "merge", "--hosts-dir", str(hosts), str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "out").exists()


def test_older_results_still_merge_the_old_way(tmp_path: Path, sample_doc: dict[str, object]) -> None:
    """A results.json without the new host fields validates, and positional merges still exit 0."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(sample_doc))
    assert main(["report", "merge", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "m")]) == 0
    assert not (tmp_path / "latest").exists()  # only a fan-out merge moves `latest`
