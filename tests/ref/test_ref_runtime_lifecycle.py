"""The reference runtime from start to end: statuses, errors, the process's credentials, timeouts and signals
that leave nothing behind, the command line, and the same bundle under runc (view and start-up time)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest
from test_ref_runtime import (  # noqa: F401 (fixture, marks)
    Box,
    Result,
    box_fixture,
    inode_of,
    processes_in,
    processes_with,
    pytestmark,
)

from conformance.ref.runspec import default_config

ROOT = Path(__file__).resolve().parents[2]
needs_runc = pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")


def test_the_status_is_the_containers(box: Box) -> None:
    """An exit code as it is; a death by signal N as 128+N (here SIGTERM, without a PID namespace)."""
    assert box.run("echo out; echo err >&2; exit 7") == Result(7, "out\n", "err\n")
    box.config["linux"]["namespaces"] = [n for n in box.config["linux"]["namespaces"] if n["type"] != "pid"]
    assert box.run("kill -TERM $$; sleep 5").status == 128 + signal.SIGTERM


def test_a_program_that_cannot_run_fails_like_in_a_shell(box: Box) -> None:
    """Not found: 127; found but not executable: 126; the reason on the container's stderr."""
    (box.rootfs / "notexec").write_text("#!/bin/sh\n")
    box.config["process"]["args"] = ["/no/such/program"]
    missing = box.run()
    box.config["process"]["args"] = ["/notexec"]
    denied = box.run()
    box.config["process"]["args"] = ["nosuchcommand"]
    unknown = box.run()
    assert (missing.status, denied.status, unknown.status) == (127, 126, 127)
    assert "/no/such/program" in missing.err and "Permission denied" in denied.err and "not found" in unknown.err


def test_a_container_that_cannot_start_raises_with_the_step(box: Box) -> None:
    """A failing mount: ContainerError names the mounts[] entry and the reason; nothing is left."""
    box.config["mounts"].append({"destination": "/data", "type": "bind", "source": "/no/such/dir",
                                 "options": ["rbind"]})
    mounts = box.host_mounts()
    result = box.run("echo ran")
    assert result.error is not None and result.out == ""
    assert "mounts[6] (/data)" in str(result.error) and "does not exist" in str(result.error)
    assert box.host_mounts() == mounts and processes_with(box.marker) == []


def test_the_process_gets_its_user_groups_cwd_env_and_limits(box: Box) -> None:
    """config.md § POSIX process: user, additionalGids, umask, cwd, env, rlimits, capabilities, noNewPrivileges."""
    box.config["process"].update({
        "user": {"uid": 1000, "gid": 1001, "additionalGids": [5, 7], "umask": 0o077},
        "cwd": "/tmp", "env": ["PATH=/bin", "GREETING=hello", box.marker],
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 77, "hard": 88}], "oomScoreAdj": 345,
        "capabilities": {"bounding": ["CAP_KILL", "CAP_NET_RAW"], "effective": ["CAP_KILL"],
                         "permitted": ["CAP_KILL"], "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]},
    })
    result = box.run("id; umask; pwd; echo $GREETING; ulimit -n; ulimit -Hn; cat /proc/self/oom_score_adj; "
                     "grep -E '^(Cap(Bnd|Eff|Amb)|NoNewPrivs)' /proc/self/status")
    assert result.out.split("\n")[:7] == ["uid=1000 gid=1001 groups=5,7", "0077", "/tmp", "hello", "77", "88",
                                          "345"], result
    status = dict(line.split(":\t") for line in result.out.strip().split("\n")[7:])
    kill, raw = 1 << 5, 1 << 13
    assert status == {"CapBnd": f"{kill | raw:016x}", "CapEff": f"{kill:016x}", "CapAmb": f"{kill:016x}",
                      "NoNewPrivs": "1"}


@pytest.mark.parametrize("pid_namespace", [True, False])
def test_a_timeout_kills_every_process_of_the_container(box: Box, pid_namespace: bool) -> None:
    """After the timeout nothing of the container is left: no process (children included), no mount."""
    if not pid_namespace:  # then the runtime's first child, a subreaper, kills what the container left
        box.config["linux"]["namespaces"] = [n for n in box.config["linux"]["namespaces"] if n["type"] != "pid"]
    mounts = box.host_mounts()
    started = time.monotonic()
    result = box.run("readlink /proc/self/ns/pid; (sleep 100 &) ; sleep 100 & sleep 100", timeout=0.5)
    # the bound only tells "killed at the timeout" from "ran its 100 s": wide, as a loaded host is slow
    assert result.status == 128 + signal.SIGKILL and time.monotonic() - started < 30, result
    assert processes_with(box.marker) == []
    if pid_namespace:
        assert processes_in(inode_of(result.out)) == []
    assert box.host_mounts() == mounts


def test_a_subreaper_collects_what_the_container_left_running(box: Box) -> None:
    """Without a PID namespace, a daemon the container started is killed when the container's process ends."""
    box.config["linux"]["namespaces"] = [n for n in box.config["linux"]["namespaces"] if n["type"] != "pid"]
    assert box.run("(setsid sleep 100 &); exit 3").status == 3
    assert processes_with(box.marker) == []


def _cli(*args: str, stdout: int | IO[bytes] | None = None, stderr: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "conformance.ref.runtime", *args], cwd=ROOT, stdout=stdout,
                            stderr=stderr)


def cli_run_until_ready(box: Box, script: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`run` of box's bundle from the command line, once its script has printed "ready"; the output file."""
    box.write(script)
    out = box.root / "io" / "cli.out"
    with open(out, "wb") as stdout:
        runtime = _cli("run", "--bundle", str(box.bundle), "conformance-cli", stdout=stdout)
    deadline = time.monotonic() + 20
    while "ready" not in out.read_text():
        assert runtime.poll() is None and time.monotonic() < deadline, "the container never came up"
        time.sleep(0.01)
    return runtime, out


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 130)])
def test_the_command_line_tears_the_container_down_on_a_signal(box: Box, signum: int, status: int) -> None:
    """SIGTERM or SIGINT to `run`: the container's PID namespace is killed, then the runtime ends by the signal."""
    runtime, out = cli_run_until_ready(box, "readlink /proc/self/ns/pid; echo ready; sleep 100")
    runtime.send_signal(signum)
    assert runtime.wait(20) == status
    assert processes_in(inode_of(out.read_text().split()[0])) == [] and processes_with(box.marker) == []


def test_the_command_line_runs_a_bundle_and_prints_a_spec(box: Box) -> None:
    """`run` exits with the container's status; a bad config is one line and 2; `spec` is default_config."""
    box.write("echo hello; exit 4")
    run = _cli("run", "--bundle", str(box.bundle), "conformance-cli", stdout=subprocess.PIPE)
    assert run.communicate(timeout=30)[0] == b"hello\n" and run.returncode == 4
    box.config["linux"]["maskedPaths"] = ["relative/path"]
    box.write()
    bad = _cli("run", "-b", str(box.bundle), "conformance-cli", stderr=subprocess.PIPE)
    err = bad.communicate(timeout=30)[1].decode()
    assert bad.returncode == 2 and err.count("\n") == 1 and "linux.maskedPaths[0]" in err, err
    spec = _cli("spec", "--", "sh", "-c", "true", stdout=subprocess.PIPE)
    assert json.loads(spec.communicate(timeout=30)[0]) == default_config(["sh", "-c", "true"])


# The same bundle under runc --------------------------------------------------------------------------------

VIEW = ("echo $$; hostname; id; ls /dev; grep -E '^Cap|^NoNew' /proc/self/status; cat /proc/self/uid_map; "
        "ulimit -n; awk '{print $5, $4, $(NF-2)}' /proc/self/mountinfo | sort")


def _runc(box: Box, cid: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["runc", "run", "--bundle", str(box.bundle), cid], capture_output=True, text=True,
                              timeout=60, check=False, stdin=subprocess.DEVNULL)
    finally:
        subprocess.run(["runc", "delete", "--force", cid], capture_output=True, timeout=60, check=False)


def _without_device_binds(view: str) -> str:
    """runc (as root, no user namespace) mknods the default devices where the reference binds the host's: drop
    those mounts, and say "a /dev/null" for a masked path whichever file system the /dev/null lives on.

    runc also moves the container into a cgroup of its own before the cgroup namespace is made, so the
    host's cgroup mounts (under the rbind of /sys with a user namespace) read "/.." there; the reference makes
    no cgroup yet, so their roots are left out.
    """
    devices = {f"/dev/{name}" for name in ("null", "zero", "full", "random", "urandom", "tty")}
    lines = []
    for line in view.split("\n"):
        fields = line.split(" ")
        if fields[0] in devices:
            continue
        if fields[1:2] == ["/null"]:
            lines.append(f"{fields[0]} a /dev/null")
        elif fields[2:] in (["cgroup"], ["cgroup2"]):
            lines.append(f"{fields[0]} {fields[2]}")
        else:
            lines.append(line)
    return "\n".join(lines)


@needs_runc
@pytest.mark.parametrize("user_ns", [False, True])
def test_runc_and_the_reference_show_the_same_container(box: Box, user_ns: bool) -> None:
    """default_config is a bundle runc runs, and what the process sees is the same under both runtimes."""
    if user_ns:
        box.config = default_config(["true"], hostname="conformance-box", user_ns_maps=[(0, 100000, 65536)])
    box.write(VIEW)
    runc = _runc(box, "conformance-ref-vs-runc")
    ref = box.run(VIEW)
    assert runc.returncode == 0, runc.stderr
    assert _without_device_binds(ref.out) == _without_device_binds(runc.stdout)
