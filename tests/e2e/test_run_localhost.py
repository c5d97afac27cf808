"""The main command on localhost, end to end: a real run of the suite that writes a real report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conformance.clauses import load_catalogue
from conformance.probe.clean import leftover_engine_objects
from tests.conftest import ROOT, needs_root, run_cli

pytestmark = [needs_root(), pytest.mark.slow]

SCHEMA = Path(__file__).resolve().parents[2] / "conformance" / "report" / "schema" / "results.schema.json"
HOST_CLAUSES = [c.id for c in load_catalogue().select(("host",))]
LAYER_CLAUSES = [c.id for c in load_catalogue().select(("layers",))]
OVERLAY_CLAUSES = [c.id for c in load_catalogue().select(("overlay",))]
NS_CLAUSES = [c.id for c in load_catalogue().select(("namespaces",))]
CG_CLAUSES = [c.id for c in load_catalogue().select(("cgroups",))]
#: what the reference implementations answer
REF_CLAUSES = LAYER_CLAUSES + OVERLAY_CLAUSES + NS_CLAUSES + CG_CLAUSES
RUN_CLAUSES = HOST_CLAUSES + REF_CLAUSES  # the areas a default run covers: every one
#: Clauses only a pure cgroup v2 host can check: elsewhere they skip, with or without a fault.
V2_ONLY = {"NS-CG-002", *(c.id for c in load_catalogue().select(("cgroups",)) if "v2" in c.tags)}


def _run(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]:
    done = run_cli("run", "--report-dir", str(tmp), *args)
    latest = tmp / "latest"
    assert latest.is_symlink(), done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = latest.resolve()
    return done, json.loads((run_dir / "results.json").read_text()), run_dir


#: What the run may add to the directory it is started from (pytest's own cache).
OWN_FILES = {".pytest_cache"}
_STARTED_FROM: dict[str, set[str]] = {}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.CompletedProcess[str],
                                                                          dict[str, Any], Path]]:
    before = set(os.listdir(ROOT))
    done = _run(tmp_path_factory.mktemp("reports"))
    _STARTED_FROM["added"] = set(os.listdir(ROOT)) - before - OWN_FILES
    yield done


def test_run_dir_is_named_by_utc_time_and_short_id(clean_run: Any) -> None:
    _done, results, run_dir = clean_run
    assert run_dir.name == results["run"]["id"]
    stamp, short = run_dir.name.split("_")
    assert len(stamp) == 16 and stamp.endswith("Z") and len(short) == 6


def test_results_validate_against_the_shipped_schema(clean_run: Any) -> None:
    _done, results, _run_dir = clean_run
    jsonschema.validate(results, json.loads(SCHEMA.read_text()))


def test_every_host_clause_has_a_verdict_and_the_facts_are_there(clean_run: Any) -> None:
    _done, results, _run_dir = clean_run
    seen = {r["clause"]: r["verdict"] for r in results["results"] if r["area"] == "host"}
    assert sorted(seen) == sorted(HOST_CLAUSES)
    assert set(seen.values()) <= {"pass", "warn", "fail", "skip", "xfail"}
    [local] = results["hosts"]
    assert local["reachable"] and local["facts"]["cgroup"]["mode"] in ("v1", "v2", "hybrid")
    assert local["facts"]["kernel"]["release"] == os.uname().release
    ref = {r["clause"]: r["verdict"] for r in results["results"] if r["implementation"] == "ref"}
    assert sorted(ref) == sorted(REF_CLAUSES)
    skipped = {cid for cid, verdict in ref.items() if verdict == "skip"}
    assert set(ref.values()) <= {"pass", "skip"}
    # only a clause this host cannot check skips (NS-CG-002, memory.high and unified need pure cgroup v2)
    assert skipped <= (set() if local["facts"]["cgroup"]["mode"] == "v2" else V2_ONLY)
    overlay = {r["clause"] for r in results["results"] if r["implementation"] in ("kernel", "fuse-overlayfs")}
    assert set(OVERLAY_CLAUSES) <= overlay  # the model's answers sit beside the real overlays' on this host
    runc = {r["clause"]: r["verdict"] for r in results["results"] if r["implementation"] == "runc"}
    assert sorted(runc) == sorted(NS_CLAUSES + CG_CLAUSES)  # and the reference runtime's beside runc's
    modes = {r["context"].get("cgroup mode") for r in results["results"] if r["area"] == "cgroups"}
    assert modes == {local["facts"]["cgroup"]["mode"]}  # every cgroups result names the layout it came from


def test_exit_code_follows_the_verdicts(clean_run: Any) -> None:
    done, results, _run_dir = clean_run
    verdicts = {r["verdict"] for r in results["results"]}
    # an error (a clause that could not be decided, such as a CPU window on a host too busy) outranks a fail
    expected = 2 if "error" in verdicts else 1 if verdicts & {"fail", "timeout"} else 0
    assert done.returncode == expected, done.stdout[-2000:] + done.stderr[-2000:]


def test_junit_has_one_uniquely_named_testcase_per_result(clean_run: Any) -> None:
    _done, results, run_dir = clean_run
    cases = ET.parse(run_dir / "junit.xml").getroot().iter("testcase")
    names = [c.get("name") for c in cases]
    assert len(names) == len(results["results"]) == len(set(names))
    assert all(any(cid in (n or "") for cid in RUN_CLAUSES) for n in names)


def test_summary_and_html_are_written(clean_run: Any) -> None:
    _done, _results, run_dir = clean_run
    assert (run_dir / "summary.md").stat().st_size < 1024 * 1024
    html = (run_dir / "report.html").read_text()
    assert 'id="matrix"' in html and all(cid in html for cid in RUN_CLAUSES)


def test_host_is_left_as_found(clean_run: Any) -> None:
    """Nothing the run named (conformance-<short id>-...) is left; other work on the host is not this run's."""
    _done, _results, run_dir = clean_run
    mine = f"conformance-{run_dir.name.split('_')[1]}"
    assert mine not in Path("/proc/self/mountinfo").read_text()
    assert not [p for p in os.listdir("/tmp") if p.startswith(mine)]
    assert leftover_engine_objects(run_dir.name.split("_")[1]) == []  # docker containers and images too
    # Nor in the directory it was started from (conmon, for one, writes `oom` into its working directory).
    assert _STARTED_FROM["added"] == set()


@pytest.mark.parametrize(("area", "clauses"), [("host", HOST_CLAUSES), ("layers", LAYER_CLAUSES),
                                               ("overlay", OVERLAY_CLAUSES), ("namespaces", NS_CLAUSES),
                                               ("cgroups", CG_CLAUSES)])
def test_every_clause_has_teeth(tmp_path: Path, area: str, clauses: list[str]) -> None:
    """Each clause's faulty variant (kernel for host, ref otherwise) is caught: its verdict is fail (at MAY)."""
    impl = {"host": "kernel"}.get(area, "ref")  # the faulty variants are theirs; the tools have none
    _done, results, _run_dir = _run(tmp_path, "--faults", "--level", "MAY", "--area", area, "--impl", impl)
    faulty: dict[str, set[str]] = {}
    normal: dict[str, set[str]] = {}
    for r in results["results"]:
        (faulty if r["fault"] else normal).setdefault(r["clause"], set()).add(r["verdict"])
    assert sorted(faulty) == sorted(clauses)
    # a clause this host cannot check (cgroup v2 only, say) skips with or without the fault: no teeth to show here
    unable = {cid for cid, v in normal.items() if v == {"skip"}}
    # a clause checked over many cases (the hostile corpus) is caught when any of its cases fails
    assert {cid: v for cid, v in faulty.items() if "fail" not in v and cid not in unable} == {}


def test_unreachable_host_is_one_verdict_and_localhost_completes(tmp_path: Path) -> None:
    done, results, _run_dir = _run(tmp_path, "--hosts", "local://,ssh://root@127.0.0.1:1?timeout=3", "--area", "host")
    assert done.returncode == 3, done.stdout[-2000:]
    unreachable = [r for r in results["results"] if r["verdict"] == "unreachable"]
    assert len(unreachable) == 1 and unreachable[0]["host"] == "127.0.0.1"
    assert "refused" in unreachable[0]["message"].lower() or "port 1" in unreachable[0]["message"]
    local = {r["clause"] for r in results["results"] if r["host"] == "local"}
    assert sorted(local) == sorted(HOST_CLAUSES)
    junit = (_run_dir / "junit.xml").read_text()
    assert "[127.0.0.1] reachability" in junit


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run_cli("run", "--report-dir", str(tmp_path), "--hosts", ",").returncode == 2
    assert run_cli("run", "--report-dir", str(tmp_path), "--hosts", "").returncode == 2
    assert run_cli("run", "--report-dir", str(tmp_path), "--impl", "nonesuch").returncode == 2


def test_report_diff_exits_1_on_a_regression_and_merge_joins_runs(clean_run: Any, tmp_path: Path) -> None:
    _done, results, run_dir = clean_run
    worse = json.loads(json.dumps(results))
    passing = next(r for r in worse["results"] if r["verdict"] == "pass")
    passing.update(verdict="fail", message="made-up regression", expected="x", actual="y")
    worse["summary"]["by_verdict"]["pass"] -= 1
    worse["summary"]["by_verdict"]["fail"] += 1
    worse["summary"]["by_level"][passing["level"]]["pass"] -= 1
    worse["summary"]["by_level"][passing["level"]]["fail"] += 1
    worse["summary"]["conformant"] = False
    worse["run"]["id"] = results["run"]["id"][:-6] + "bad000"
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "results.json").write_text(json.dumps(worse))
    same = run_cli("report", "diff", str(run_dir), str(run_dir))
    assert same.returncode == 0, same.stdout + same.stderr
    regressed = run_cli("report", "diff", str(run_dir), str(bad_dir))
    assert regressed.returncode == 1 and passing["clause"] in regressed.stdout, regressed.stdout + regressed.stderr
    back = run_cli("report", "diff", str(bad_dir), str(run_dir))
    assert back.returncode == 0, back.stdout
    merged = run_cli("report", "merge", str(run_dir), str(bad_dir), "-o", str(tmp_path / "merged"))
    assert merged.returncode == 0, merged.stderr
    written = {p.name for p in (tmp_path / "merged").iterdir()}
    assert {"results.json", "junit.xml", "report.html", "summary.md"} <= written


def test_report_renders_in_headless_chromium(clean_run: Any, artifacts: Path) -> None:
    """The page loads offline in a real browser, the matrix is there, and a screenshot is kept."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: playbooks/site.yml should have installed it")
        pytest.skip("chromium is not installed; run bin/bootstrap")
    _done, _results, run_dir = clean_run
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={run_dir.parent / 'chromium-profile'}"]
    url = (run_dir / "report.html").as_uri()
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120,
                         check=False)
    assert 'id="matrix"' in dom.stdout and "HOST-OVERLAY-001" in dom.stdout, dom.stderr[-2000:]
    shot = artifacts / "report.png"
    subprocess.run([chromium, *flags, "--window-size=1400,1800", f"--screenshot={shot}", url],
                   capture_output=True, text=True, timeout=120, check=False)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_known_deviations_turn_red_when_stale(tmp_path: Path) -> None:
    """A deviation that still deviates is xfail; one that passes, or has expired, fails."""
    deviations = tmp_path / "deviations.yaml"
    deviations.write_text(
        "deviations:\n"
        "  - {clause: HOST-OVERLAY-001, implementation: kernel, justification: recorded although it passes,"
        " link: https://example.org/1, expires: 2999-01-01}\n"
        "  - {clause: HOST-OVERLAY-002, implementation: kernel, justification: recorded and long expired,"
        " link: https://example.org/2, expires: 2001-01-01}\n"
        "  - {clause: HOST-NS-UTS-001, implementation: kernel, versions: '<1.0', justification: an old kernel"
        " only, link: https://example.org/3, expires: 2999-01-01}\n"
        "  - {clause: HOST-CGROUP-007, implementation: kernel, versions: '>=3.0', justification: hybrid"
        " cgroups until the fleet moves, link: https://example.org/4, expires: 2999-01-01}\n"
    )
    _done, results, _run_dir = _run(tmp_path / "reports", "--area", "host", "--level", "SHOULD",
                                    "--", "--deviations", str(deviations))
    verdicts = {r["clause"]: r for r in results["results"]}
    assert verdicts["HOST-OVERLAY-001"]["verdict"] == "fail"
    assert "no longer deviates" in verdicts["HOST-OVERLAY-001"]["message"]
    assert verdicts["HOST-OVERLAY-002"]["verdict"] == "fail"
    assert "expired on 2001-01-01" in verdicts["HOST-OVERLAY-002"]["message"]
    assert verdicts["HOST-NS-UTS-001"]["verdict"] == "pass"  # the version range does not cover this kernel
    # a kernel release like 6.18.44-fc-v669 is compared as 6.18.44; on a v2 host the clause passes instead
    expected = "fail" if results["hosts"][0]["facts"]["cgroup"]["mode"] == "v2" else "xfail"
    assert verdicts["HOST-CGROUP-007"]["verdict"] == expected, verdicts["HOST-CGROUP-007"]


HARNESS_FAULT = """
from conformance.transport import ProbeClient, ProbeError

_call = ProbeClient.call


def call(self, scenarios, *args, **kwargs):
    if any(s.kind == "host.filesystems" for s in scenarios):
        raise ProbeError("made-up probe crash")
    return _call(self, scenarios, *args, **kwargs)


ProbeClient.call = call
"""


def test_harness_error_is_not_hidden_by_a_deviation(tmp_path: Path) -> None:
    """A crashed probe is `error` (exit 2) even where a known deviation covers the clause."""
    (tmp_path / "harness_fault.py").write_text(HARNESS_FAULT)
    deviations = tmp_path / "deviations.yaml"
    deviations.write_text("deviations:\n  - {clause: HOST-OVERLAY-001, implementation: kernel, justification:"
                          " covers failures only, link: https://example.org/5, expires: 2999-01-01}\n")
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env_path}" if env_path else str(tmp_path)
    try:
        done, results, _run_dir = _run(tmp_path / "reports", "--area", "host", "--", "-p", "harness_fault",
                                       "--deviations", str(deviations))
    finally:
        os.environ["PYTHONPATH"] = env_path
    verdicts = {r["clause"]: r for r in results["results"]}
    assert verdicts["HOST-OVERLAY-001"]["verdict"] == "error"
    assert "made-up probe crash" in verdicts["HOST-OVERLAY-001"]["message"]
    assert done.returncode == 2


def test_a_run_that_checks_nothing_is_undecided(tmp_path: Path) -> None:
    """--impl ref offers no host area yet: every test is a recorded skip, and the run is not called conformant."""
    done, results, _run_dir = _run(tmp_path, "--impl", "ref", "--area", "host")
    assert done.returncode == 2 and "nothing was checked" in done.stdout
    assert {r["verdict"] for r in results["results"]} == {"skip"}
    assert all("no selected implementation" in r["message"] for r in results["results"])


def test_a_conftest_where_the_run_starts_is_not_loaded(tmp_path: Path) -> None:
    """A conftest.py in the directory a run starts from (or its test*/ dirs, as pytest looks) cannot change it."""
    for folder in (tmp_path, tmp_path / "tests"):
        folder.mkdir(exist_ok=True)
        (folder / "conftest.py").write_text("raise SystemExit('a stray conftest.py was loaded')\n")
    done = run_cli("run", "--area", "host", "--impl", "kernel", "--report-dir", str(tmp_path / "reports"),
                   "--", "-k", "overlay_is_listed", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "stray conftest" not in done.stdout + done.stderr
