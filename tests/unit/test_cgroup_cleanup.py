"""No cgroup outlives a cgroups run: Ctrl-C (SIGINT) or SIGTERM mid-run removes the container's cgroup,
and what a SIGKILLed run left is removed by `conformance clean`. Checked before and after, with the
reference runtime and runc, on this host's real hierarchies."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.probe.clean import leftover_cgroups, leftover_oci_containers, leftover_paths
from conformance.scenarios import cgroups as cg
from conformance.transport import build_bundle
from tests.conftest import needs_root, run_cli

pytestmark = needs_root()

IMPLEMENTATIONS = ["ref", *(["runc"] if shutil.which("runc") else [])]


def _start(tmp_path: Path, run_id: str, implementation: str) -> subprocess.Popen[bytes]:
    """A probe running a limited container that waits at a checkpoint for ever; returns once its cgroup exists."""
    bundle = tmp_path / "probe.pyz"
    bundle.write_bytes(build_bundle())
    scenario = cg.run("at running; sleep 300", resources={"memory": {"limit": 64 << 20}, "pids": {"limit": 32}},
                      checkpoints={"running": ["read"]}, timeout=120)
    request = {"run_id": run_id, "scenarios": [scenario.to_request(0, implementation, None)]}
    probe = subprocess.Popen([sys.executable, str(bundle), base64.b64encode(json.dumps(request).encode()).decode()],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not leftover_cgroups(run_id):
        if time.monotonic() > deadline or probe.poll() is not None:
            probe.kill()
            pytest.fail(f"the {implementation} container never got its cgroup")
        time.sleep(0.05)
    return probe


def _leftovers(run_id: str) -> list[str]:
    return [*leftover_cgroups(run_id), *(" ".join(a) for a in leftover_oci_containers(run_id)),
            *(p for p in leftover_paths(run_id) if "probe" not in p)]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_a_stopped_run_leaves_no_cgroup(tmp_path: Path, implementation: str, signum: int) -> None:
    run_id = f"unitcg{int(signum)}{implementation}"
    assert _leftovers(run_id) == []
    probe = _start(tmp_path, run_id, implementation)
    probe.send_signal(signum)
    probe.wait(timeout=60)
    assert _leftovers(run_id) == []


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_clean_removes_the_cgroup_of_a_killed_run(tmp_path: Path, implementation: str) -> None:
    run_id = f"unitcgkill{implementation}"
    assert _leftovers(run_id) == []
    probe = _start(tmp_path, run_id, implementation)
    probe.send_signal(signal.SIGKILL)
    probe.wait(timeout=30)
    assert leftover_cgroups(run_id), "a SIGKILLed probe cannot clean up: its container's cgroup is still there"
    done = run_cli("clean", "--run-id", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    deadline = time.monotonic() + 10  # the ref runtime's init dies with its parent a moment later
    while _leftovers(run_id) and time.monotonic() < deadline:
        time.sleep(0.1)
        run_cli("clean", "--run-id", run_id)
    assert _leftovers(run_id) == []
