"""Controller mode and the fan-out path, for real on this machine: two inventory hosts with local connections.

Each run checks one fast clause per area so the whole file stays within seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, needs_root, run_cli

pytestmark = [needs_root(), pytest.mark.slow]

HOST_TEST = "test_overlay_is_listed_in_proc_filesystems"  # HOST-OVERLAY-001, reads /proc/filesystems
LAYER_TEST = "test_blob_with_wrong_digest_is_refused"  # OCI-DESC-001, in memory on the host
INVENTORY = """\
all:
  children:
    fleet:
      hosts:
        alpha:
          ansible_connection: local
          conformance_areas: [host]
          conformance_level: SHOULD
        beta:
          ansible_connection: local
          conformance_areas: layers
          conformance_impls: [ref]
"""


def results_of(report_dir: Path) -> dict[str, Any]:
    latest = report_dir / "latest"
    assert latest.is_symlink(), list(report_dir.iterdir()) if report_dir.exists() else "no report dir"
    data: dict[str, Any] = json.loads((latest / "results.json").read_text())
    return data


def test_inventory_hosts_each_check_what_their_vars_select(tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.yml"
    inventory.write_text(INVENTORY)
    reports = tmp_path / "reports"
    done = run_cli("run", "--inventory", str(inventory), "--impl", "kernel", "--impl", "ref",
                   "--report-dir", str(reports), "--", "-k", f"{HOST_TEST} or {LAYER_TEST}", timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 workers" in done.stdout  # one xdist worker per inventory host
    results = results_of(reports)
    ran = sorted((r["host"], r["clause"], r["implementation"], r["verdict"]) for r in results["results"])
    assert ran == [("alpha", "HOST-OVERLAY-001", "kernel", "pass"), ("beta", "OCI-DESC-001", "ref", "pass")]
    hosts = {h["name"]: h for h in results["hosts"]}
    assert hosts["alpha"]["spec"] == "ansible://alpha" and hosts["beta"]["spec"] == "ansible://beta"
    assert hosts["alpha"]["selection"] == {"areas": ["host"], "impls": None, "level": "SHOULD", "source": "inventory"}
    assert hosts["beta"]["selection"] == {"areas": ["layers"], "impls": ["ref"], "level": "MUST",
                                          "source": "inventory"}
    assert results["run"]["level"] == "SHOULD"  # the most inclusive host level
    assert hosts["alpha"]["facts"]["kernel"]["release"] == os.uname().release
    html = (reports / "latest" / "report.html").read_text()
    assert "not selected for this host by inventory var conformance_areas" in html
    assert not [p for p in os.listdir("/tmp") if p.startswith(f"conformance-{results['run']['id'][-6:]}")]


def test_plain_pytest_over_an_ansible_inventory_with_one_worker_per_host(tmp_path: Path) -> None:
    """The issue's first form: `pytest --hosts=ansible://all --ansible-inventory=... -n 2`, no CLI of ours."""
    inventory = tmp_path / "fleet.yml"
    inventory.write_text(INVENTORY)
    reports = tmp_path / "reports"
    done = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "conformance.suite", "-p", "no:cacheprovider",
                           "--hosts=ansible://all", f"--ansible-inventory={inventory}", "--area", "host",
                           "--report-dir", str(reports), "-n", "2", "--dist", "loadgroup", "-k", HOST_TEST],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 workers" in done.stdout
    results = results_of(reports)
    assert sorted((r["host"], r["clause"], r["verdict"]) for r in results["results"]) == [
        ("alpha", "HOST-OVERLAY-001", "pass"), ("beta", "HOST-OVERLAY-001", "pass")]
    assert sorted(h["spec"] for h in results["hosts"]) == ["ansible://alpha", "ansible://beta"]


def test_limit_picks_inventory_hosts_with_ansible_patterns(tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.yml"
    inventory.write_text(INVENTORY)
    done = run_cli("run", "--inventory", str(inventory), "--limit", "fleet:!beta", "--impl", "kernel",
                   "--report-dir", str(tmp_path / "reports"), "--", "-k", HOST_TEST, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [h["name"] for h in results_of(tmp_path / "reports")["hosts"]] == ["alpha"]


def test_as_host_run_then_hosts_dir_merge(tmp_path: Path) -> None:
    """What playbooks/run.yml does per host, then on the controller: run as NAME, collect, merge."""
    run_id = "20261206T093000Z_0a1b2c3d"
    host_reports = tmp_path / "on-host"
    done = run_cli("run", "--as-host", "node1", "--run-id", run_id, "--impl", "kernel", "--area", "host",
                   "--report-dir", str(host_reports), "--", "-k", HOST_TEST, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = results_of(host_reports)
    assert results["run"]["id"] == run_id and (host_reports / run_id).is_dir()
    assert [h["name"] for h in results["hosts"]] == ["node1"]
    assert {r["host"] for r in results["results"]} == {"node1"}

    controller = tmp_path / "reports" / run_id
    folder = controller / "hosts" / "node1"
    shutil.copytree(host_reports / run_id, folder)
    (folder / "status.json").write_text(json.dumps({"host": "node1", "state": "ran", "rc": 0, "message": ""}))
    (controller / "hosts" / "node2").mkdir()
    (controller / "hosts" / "node2" / "status.json").write_text(json.dumps(
        {"host": "node2", "state": "unreachable", "rc": None, "message": "Failed to connect to the host via ssh"}))
    merged = run_cli("report", "merge", "--hosts-dir", str(controller / "hosts"), "-o", str(controller))
    assert merged.returncode == 1, merged.stdout + merged.stderr
    data = results_of(tmp_path / "reports")
    assert data["run"]["id"] == run_id
    assert [(h["name"], h["reachable"]) for h in data["hosts"]] == [("node1", True), ("node2", False)]
    assert "Failed to connect" in (controller / "summary.md").read_text()
