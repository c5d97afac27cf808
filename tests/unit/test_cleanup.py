"""Leave the host as you found it: a probe stopped by its timeout cleans up; one killed with SIGKILL
leaves prefixed leftovers that `conformance clean` removes."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conformance import facts
from conformance.hosts import renamed, resolve
from conformance.interrupts import sigterm_held
from conformance.probe.clean import leftover_cgroups, leftover_mounts, leftover_paths
from conformance.scenarios import Scenario
from conformance.transport import ProbeClient, ProbeTimeout, build_bundle
from tests.conftest import ROOT, conformance_cli, needs_root, run_cli

pytestmark = needs_root()


def _leftovers(run_id: str) -> list[str]:
    return [*leftover_mounts(run_id), *leftover_cgroups(run_id), *leftover_paths(run_id)]


def test_probe_timeout_cleans_up() -> None:
    [host] = resolve(["local://"])
    client = ProbeClient(host, "unittimeout")
    with pytest.raises(ProbeTimeout, match="stopped and cleaned up"):
        client.call([Scenario("selftest.hold", {"seconds": 30})], "kernel", timeout=2)
    client.remove_bundle()
    assert _leftovers("unittimeout") == []


def test_an_interrupt_while_facts_are_gathered_takes_the_probes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C or SIGTERM that lands while the hosts are asked for facts (before the run has a state to sweep
    at its end) still leaves nothing on the hosts: the probes the threads shipped are removed."""
    real = facts.at_once
    calls: list[int] = []

    def interrupted_after_the_work(work: Any, items: Any) -> Any:
        calls.append(len(items))
        answers = real(work, items)
        if len(calls) == 1:  # the gathering itself: the probes are on the hosts now
            assert any("-probe-" in p for p in leftover_paths("unitgather")), "the probe was never shipped"
            raise KeyboardInterrupt("signal 15")
        return answers

    monkeypatch.setattr(facts, "at_once", interrupted_after_the_work)
    with pytest.raises(KeyboardInterrupt):
        facts.gather(resolve(["local://"]), "unitgather", 60)
    assert calls == [1, 1]  # the gathering, then taking the probes back
    assert _leftovers("unitgather") == []


def test_clean_removes_what_a_killed_probe_left(tmp_path: Path) -> None:
    bundle = tmp_path / "probe.pyz"
    bundle.write_bytes(build_bundle())
    request = base64.b64encode(json.dumps({"run_id": "unitkilled", "scenarios": [
        {"id": "0", "kind": "selftest.hold", "params": {"seconds": 60}, "implementation": "kernel"}]}).encode())
    probe = subprocess.Popen([sys.executable, str(bundle), request.decode()])
    try:
        deadline = time.monotonic() + 30
        while not any(Path(p, "ready").exists() for p in leftover_paths("unitkilled")):
            assert time.monotonic() < deadline, "the probe never got ready"
            time.sleep(0.05)
    finally:
        probe.send_signal(signal.SIGKILL)
        probe.wait()
    left = _leftovers("unitkilled")
    assert any("/tmp/conformance-unitkilled" in p for p in left), left
    dry = run_cli("clean", "--run-id", "unitkilled", "--dry-run")
    assert dry.returncode == 0 and "would remove" in dry.stdout, dry.stderr
    assert _leftovers("unitkilled") == left
    done = run_cli("clean", "--run-id", "unitkilled")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _leftovers("unitkilled") == []
    assert os.path.exists("/tmp")  # nothing outside the prefix went


def test_hosts_sharing_a_kernel_sweep_only_their_own_names() -> None:
    """Two hosts of one run on one machine (like the test bed's netns hosts): the sweep that ends one
    host's run leaves the other's names alone, and `clean --run-id` still finds both."""
    [local] = resolve(["local://"])
    gathered = facts.gather([renamed(local, "shared-a"), renamed(local, "shared-b")], "unitshare", 60)
    assert not gathered.unreachable and not gathered.errors, (gathered.unreachable, gathered.errors)
    first, second = gathered.clients["shared-a"], gathered.clients["shared-b"]
    assert first.run_id != second.run_id
    assert first.run_id.startswith("unitshare-") and second.run_id.startswith("unitshare-")
    theirs = Path(f"/tmp/conformance-{second.run_id}-in-use")
    ours = Path(f"/tmp/conformance-{first.run_id}-left")
    theirs.mkdir()
    ours.mkdir()
    try:
        assert first.sweep(first.run_id).ok
        assert not ours.exists()
        assert theirs.is_dir(), "one host's sweep removed another host's scratch dir"
        done = run_cli("clean", "--run-id", "unitshare")
        assert done.returncode == 0, done.stdout + done.stderr
        assert not theirs.exists()
    finally:
        for path in (theirs, ours):
            if path.exists():
                path.rmdir()
        first.remove_bundle()
        second.remove_bundle()
    assert _leftovers("unitshare") == []


@pytest.mark.parametrize("how", ["conformance run", "plain pytest"])
def test_sigterm_to_a_run_still_sweeps_and_removes_the_probe(tmp_path: Path, how: str) -> None:
    """A run stopped with SIGTERM part-way (a `timeout`, a cancelled CI job) cleans up as Ctrl-C does.

    Both ways in: the CLI, and pytest run on the suite directly, where the plugin installs the handler.
    """
    short = "unitterm" if how == "conformance run" else "unittrmp"
    selection = ["--area", "host", "--impl", "kernel", "--report-dir", str(tmp_path),
                 "--run-id", f"20261206T000000Z_{short}"]
    argv = [*conformance_cli(), "run", *selection] if how == "conformance run" else \
        [sys.executable, "-m", "pytest", "--pyargs", "conformance.suite", "-p", "no:cacheprovider", "--noconftest",
         *selection]
    run = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any("-probe-" in p for p in leftover_paths(short)):  # the probe is on the host: the run is going
            assert run.poll() is None and time.monotonic() < deadline, "the run never shipped its probe"
            time.sleep(0.05)
        time.sleep(1.0)  # into the tests
        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    # the run did not complete: the CLI says 2, pytest its own "interrupted"
    assert run.returncode == (2 if how == "conformance run" else pytest.ExitCode.INTERRUPTED), output[-2000:]
    deadline = time.monotonic() + 30  # a probe that was mid-scenario finishes it and cleans its own sandbox
    while _leftovers(short) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _leftovers(short) == [], output[-2000:]


def test_sigterm_during_the_end_of_run_cleanup_does_not_cut_it_short() -> None:
    """The sweep holds SIGTERM off (a job runner may send it again), and gives the handler back after."""
    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with sigterm_held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs between bytecodes: it had its chance
            child = subprocess.run(["sh", "-c", "grep SigIgn /proc/self/status"], capture_output=True, text=True,
                                   check=True)
        assert int(child.stdout.split()[1], 16) & (1 << (signal.SIGTERM - 1)) == 0  # children may still be stopped
        assert signal.getsignal(signal.SIGTERM) is interrupt
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
    finally:
        signal.signal(signal.SIGTERM, previous)
