"""The reference cgroup manager and runtime on this host's real hierarchies (v1, hybrid or v2).

Each test names its cgroups `conformance-test-cg-<random>`; after each one, nothing of that name may be
left in any hierarchy (a leftover is removed and fails the test). Values are read from the host while
the container runs (Box.while_running), as the suite's probe reads them, from the files of the host's
cgroup version. A test with faulty variants runs once right and once per fault, and asserts the
observation is right exactly when there is no fault (`expect`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ref_runtime import (  # noqa: F401 (fixture, marks)
    Box,
    box_fixture,
    expect,
    faults,
    processes_with,
    pytestmark,
)
from test_ref_runtime_lifecycle import cli_run_until_ready

from conformance.ref.cglayout import UNIFIED, CgroupError, detect_layout, own_cgroups
from conformance.ref.cglimits import parse_resources
from conformance.ref.cgmanager import ContainerCgroup, cgroup_dirs
from conformance.ref.runspec import default_config
from conformance.ref.specread import ConfigError

MIB = 1 << 20
LAYOUT = detect_layout()
V2 = LAYOUT.limits_version == 2
#: A knob's file on this host: v1 name, v2 name.
KNOBS = {
    "memory.limit": ("memory", "memory.limit_in_bytes", "memory.max"),
    "memory.swap": ("memory", "memory.memsw.limit_in_bytes", "memory.swap.max"),
    "memory.reservation": ("memory", "memory.soft_limit_in_bytes", "memory.low"),
    "pids.limit": ("pids", "pids.max", "pids.max"),
    "cpu.shares": ("cpu", "cpu.shares", "cpu.weight"),
    "cpu.period": ("cpu", "cpu.cfs_period_us", "cpu.max"),
    "cpu.quota": ("cpu", "cpu.cfs_quota_us", "cpu.max"),
    "cpu.cpus": ("cpuset", "cpuset.cpus", "cpuset.cpus"),
}
WAIT = "echo ready; while [ ! -e /go ]; do :; done"  # builtins only: no short-lived process to race with
HOG = "x=a; while :; do x=$x$x$x$x; done"  # grows a shell variable until the kernel says no


def knob(cgroup: ContainerCgroup, name: str) -> str:
    """The value of a knob as this host's files hold it (cpu.max split into quota and period)."""
    controller, v1, v2 = KNOBS[name]
    directory = cgroup.dir_for(controller)
    assert directory is not None, f"no {controller} directory in {cgroup.dirs}"
    text = Path(directory, v2 if V2 else v1).read_text().strip()
    if V2 and name in ("cpu.quota", "cpu.period"):
        return text.split()[0 if name == "cpu.quota" else 1]
    return text


def container_lines(proc_cgroup: str, path: str) -> list[str]:
    """The /proc/PID/cgroup lines of the hierarchies the container's cgroup is in (named ones left out)."""
    joined = set(cgroup_dirs(LAYOUT, path))
    found = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and ((parts[:2] == ["0", ""] and UNIFIED in joined) or set(parts[1].split(",")) & joined):
            found.append(line)
    return found


def hierarchy_roots() -> list[Path]:
    return [Path(h.mountpoint) for h in LAYOUT.hierarchies]


def leftovers() -> list[Path]:
    """conformance-test-* cgroups directly under a hierarchy's root or below this process's own cgroups."""
    found = [p for root in hierarchy_roots() for p in root.glob("conformance-test-*")]
    own = own_cgroups()
    for h in LAYOUT.hierarchies:
        mine = own.get(UNIFIED if h.version == 2 else sorted(h.controllers)[0], "/")
        for base in {mine, os.path.dirname(mine)}:
            found += [p for p in Path(h.mountpoint, base.lstrip("/")).glob("conformance-test-*")]
    return sorted(set(found))


def _remove_by_force(path: Path) -> None:
    with contextlib.suppress(OSError):
        for pid in Path(path, "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    if Path(path, "freezer.state").exists():
        with contextlib.suppress(OSError):
            Path(path, "freezer.state").write_text("THAWED")
    deadline = time.monotonic() + 10
    while path.exists() and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            path.rmdir()
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """No conformance-test-* cgroup may outlive a test: it is removed, and the test fails."""
    before = set(leftovers())
    yield
    left = [p for p in leftovers() if p not in before]
    for path in left:
        _remove_by_force(path)
    assert left == [], f"cgroups left behind: {left}"


@pytest.fixture(name="path")
def path_fixture() -> str:
    return f"/conformance-test-cg-{secrets.token_hex(3)}"


def with_cgroup(box: Box, path: str, resources: dict[str, object]) -> None:
    box.config["linux"]["cgroupsPath"] = path
    box.config["linux"]["resources"] = {**box.config["linux"].get("resources", {}), **resources}


def opened(path: str, fault: str | None = None) -> ContainerCgroup:
    return ContainerCgroup.open(LAYOUT, path, faults=frozenset({fault} if fault else ()))


def gone(path: str) -> bool:
    return not any((root / path.lstrip("/")).exists() for root in hierarchy_roots())


# The manager alone --------------------------------------------------------------------------------------


def test_the_manager_makes_limits_joins_freezes_reads_and_removes(path: str) -> None:
    resources = parse_resources({"memory": {"limit": 64 * MIB, "reservation": 32 * MIB}, "pids": {"limit": 10},
                                 "cpu": {"shares": 512, "quota": 50000, "period": 200000, "cpus": "0"}})
    cgroup = ContainerCgroup.create(LAYOUT, path, resources)
    sleeper = subprocess.Popen(["sleep", "100"])
    try:
        assert {name: knob(cgroup, name) for name in ("memory.limit", "memory.reservation", "pids.limit",
                                                       "cpu.shares", "cpu.quota", "cpu.period", "cpu.cpus")} == {
            "memory.limit": str(64 * MIB), "memory.reservation": str(32 * MIB), "pids.limit": "10",
            "cpu.shares": "59" if V2 else "512", "cpu.quota": "50000", "cpu.period": "200000", "cpu.cpus": "0"}
        cgroup.add(sleeper.pid)
        assert cgroup.pids() == [sleeper.pid]
        lines = container_lines(Path(f"/proc/{sleeper.pid}/cgroup").read_text(), path)
        assert lines and all(line.endswith(":" + path) for line in lines), lines
        assert cgroup.stats()["pids_current_count"] == 1
        cgroup.freeze()
        assert cgroup.frozen()
        cgroup.thaw()
        assert not cgroup.frozen()
        cgroup.freeze()  # removal thaws what it kills
    finally:
        cgroup.remove()
        cgroup.remove()
    assert sleeper.wait(10) == -signal.SIGKILL and gone(path)


def test_v1_memsw_without_swap_is_accepted_and_ordered(path: str) -> None:
    """memory.memsw.* exist on v1 with swap accounting even without swap; memsw >= limit is kept at each write."""
    if V2 or not _has_swap_file():
        pytest.skip("needs v1 memory with swap accounting (memory.memsw.*)")
    cgroup = ContainerCgroup.create(LAYOUT, path, parse_resources({"memory": {"limit": 32 * MIB,
                                                                              "swap": 48 * MIB}}))
    try:
        assert (knob(cgroup, "memory.limit"), knob(cgroup, "memory.swap")) == (str(32 * MIB), str(48 * MIB))
    finally:
        cgroup.remove()


def test_open_of_a_missing_cgroup_says_so(path: str) -> None:
    with pytest.raises(CgroupError, match="not found"):
        opened(path)


# The runtime: limits the kernel enforces ---------------------------------------------------------------


def test_a_memory_hog_is_oom_killed_and_counted(box: Box, path: str) -> None:
    """Past memory.limit with no swap the kernel's OOM killer SIGKILLs the hog (137) and counts an oom_kill."""
    with_cgroup(box, path, {"memory": {"limit": 32 * MIB, "swap": 32 * MIB}})
    script = f"({HOG}); echo hog=$?; {WAIT}"
    kills, result = box.while_running(script, lambda _pid: opened(path).stats().get("memory_oom_kill_count"))
    assert result.status == 0 and result.out.startswith("hog=137\n") and kills is not None and kills >= 1, result
    assert box.run(HOG).status == 137  # the hog as the container's process: the container's status
    assert gone(path)


def test_pids_limit_stops_the_fork_past_it(box: Box, path: str) -> None:
    """pids.limit 3: the shell and two sleeps; the third fork fails (EAGAIN), the container's only processes count."""
    with_cgroup(box, path, {"pids": {"limit": 3}})
    result = box.run("sleep 30 & echo one; sleep 30 & echo two; sleep 30 & echo three")
    assert result.out == "one\ntwo\n" and "fork" in result.err, result
    assert gone(path) and processes_with(box.marker) == []


@pytest.mark.parametrize("fault", faults("pids-zero-unlimited"))
def test_pids_limit_zero_is_the_kernels_zero(box: Box, path: str, fault: str | None) -> None:
    """config-linux.md: pids.limit 0 SHOULD be written as 0; the init still execs (a migration is no fork)."""
    with_cgroup(box, path, {"pids": {"limit": 0}})
    seen, result = box.while_running("echo ready; while [ ! -e /go ]; do :; done",
                                     lambda _pid: knob(opened(path), "pids.limit"),
                                     faults=frozenset({fault} if fault else ()))
    assert result.status == 0, result
    expect(seen == "0", fault)


@pytest.mark.parametrize("fault", faults("stragglers-left"))
def test_a_container_without_pid_namespace_leaves_nothing(box: Box, path: str, fault: str | None) -> None:
    """What such a container leaves running is killed when it ends, and the cgroup removed."""
    with_cgroup(box, path, {"pids": {"limit": 20}})
    box.config["linux"]["namespaces"] = [n for n in box.config["linux"]["namespaces"] if n["type"] != "pid"]
    assert box.run("(setsid sleep 100 &); sleep 100 & exit 3", faults=frozenset({fault} if fault else ())).status == 3
    left = processes_with(box.marker)
    if fault:
        assert sorted(left) == sorted(opened(path).pids())  # still in the container's cgroup
        opened(path).remove()
    expect(left == [] and gone(path), fault)


@pytest.mark.parametrize("fault", faults("stragglers-left"))
def test_a_process_moved_in_from_outside_is_killed_at_the_end(box: Box, path: str, fault: str | None) -> None:
    """Like an exec'd process: in the cgroup but outside the container's PID namespace, killed at removal."""
    with_cgroup(box, path, {"pids": {"limit": 20}})
    sleeper = subprocess.Popen(["sleep", "100"])
    try:
        _, result = box.while_running(WAIT, lambda _pid: opened(path).add(sleeper.pid),
                                      faults=frozenset({fault} if fault else ()))
        assert result.status == 0, result
        # Gone means empty: the sleeper has left the cgroup on its way out (it may not be a zombie yet).
        expect(gone(path) and sleeper.wait(10) == -signal.SIGKILL, fault)
    finally:
        sleeper.kill()
        sleeper.wait()
        if fault:
            opened(path).remove()


# The runtime: where the container is and what is left ------------------------------------------------


@pytest.mark.parametrize("fault", faults("not-moved-in"))
def test_the_init_is_in_the_cgroup_in_every_hierarchy(box: Box, path: str, fault: str | None) -> None:
    with_cgroup(box, path, {"pids": {"limit": 20}})
    lines, result = box.while_running(WAIT,
                                      lambda pid: Path(f"/proc/{pid}/cgroup").read_text().splitlines(),
                                      faults=frozenset({fault} if fault else ()))
    joined = container_lines("\n".join(lines), path)
    assert result.status == 0 and joined, (result, lines)
    expect(all(line.endswith(":" + path) for line in joined), fault)


def test_without_cgroups_path_the_container_id_is_the_path(box: Box) -> None:
    """runc's default: the container id, below the runtime's own cgroup (its parent on v2)."""
    box.config["linux"]["resources"]["pids"] = {"limit": 20}
    cid = f"conformance-test-{len(box.runs)}"
    seen, result = box.while_running(WAIT, lambda pid: pid in opened(cid).pids())
    assert result.status == 0 and seen is True, result


@pytest.mark.parametrize("fault", faults("cgroupns-before-join"))
def test_the_cgroup_namespace_is_rooted_at_the_containers_cgroup(box: Box, path: str, fault: str | None) -> None:
    """cgroup_namespaces(7): made after the move, every hierarchy shows the container's cgroup as /."""
    with_cgroup(box, path, {"pids": {"limit": 20}})
    result = box.run("cat /proc/self/cgroup", faults=frozenset({fault} if fault else ()))
    mine = container_lines(result.out, path)
    assert result.status == 0 and mine, result
    expect(all(line.endswith(":/") for line in mine), fault)


def test_a_container_in_a_user_namespace_is_moved_in_by_the_runtime(box: Box, path: str) -> None:
    """The init cannot write the host's cgroup.procs from its user namespace: the runtime moves it."""
    box.config = default_config(["true"], user_ns_maps=[(0, 100000, 65536)])
    box.config["process"]["env"].append(box.marker)
    with_cgroup(box, path, {"pids": {"limit": 20}, "memory": {"limit": 64 * MIB}})
    result = box.run("id -u; cat /proc/self/cgroup")
    mine = container_lines(result.out, path)
    assert result.status == 0 and result.out.startswith("0\n") and mine, result
    assert all(line.endswith(":/") for line in mine) and gone(path), result


@pytest.mark.parametrize("fault", faults("cgroup-left-behind"))
def test_the_cgroup_is_removed_after_the_container(box: Box, path: str, fault: str | None) -> None:
    with_cgroup(box, path, {"pids": {"limit": 20}})
    assert box.run("sleep 100 & echo ok", faults=frozenset({fault} if fault else ())).out == "ok\n"
    left = not gone(path)
    if left:
        assert opened(path).pids() == []  # the processes were killed all the same
        opened(path).remove()
    expect(not left, fault)


def test_a_timeout_removes_the_cgroup(box: Box, path: str) -> None:
    with_cgroup(box, path, {"pids": {"limit": 20}})
    assert box.run("sleep 100 & sleep 100", timeout=0.5).status == 137
    assert gone(path) and processes_with(box.marker) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_command_line_removes_the_cgroup(box: Box, path: str, signum: int) -> None:
    with_cgroup(box, path, {"pids": {"limit": 20}})
    runtime, _out = cli_run_until_ready(box, "echo ready; sleep 100")
    assert not gone(path)
    runtime.send_signal(signum)
    assert runtime.wait(20) == (-signal.SIGTERM if signum == signal.SIGTERM else 130)
    assert gone(path) and processes_with(box.marker) == []


def test_a_limit_the_kernel_refuses_fails_naming_the_field_and_leaves_nothing(box: Box, path: str) -> None:
    with_cgroup(box, path, {"cpu": {"cpus": "63"}})  # no such CPU here
    result = box.run("echo ran")
    assert result.error is not None and "linux.resources.cpu.cpus" in str(result.error) and result.out == ""
    assert gone(path)


# Each limit fault changes what the host sees ------------------------------------------------------------

#: fault -> (resources, knob, right value on v1, right value on v2)
LIMIT_FAULTS: dict[str, tuple[dict[str, object], str, str, str]] = {
    "memory-limit-wrong-file": ({"memory": {"limit": 64 * MIB}}, "memory.limit", str(64 * MIB), str(64 * MIB)),
    "wrong-shares-conversion": ({"cpu": {"shares": 512}}, "cpu.shares", "512", "59"),
    "pids-limit-ignored": ({"pids": {"limit": 10}}, "pids.limit", "10", "10"),
    "cpu-period-ignored": ({"cpu": {"quota": 50000, "period": 200000}}, "cpu.period", "200000", "200000"),
    "cpu-quota-ignored": ({"cpu": {"quota": 50000, "period": 200000}}, "cpu.quota", "50000", "50000"),
    "cpuset-ignored": ({"cpu": {"cpus": "0"}}, "cpu.cpus", "0", "0"),
    "swap-not-converted": ({"memory": {"limit": 32 * MIB, "swap": 64 * MIB}}, "memory.swap", str(64 * MIB),
                           str(32 * MIB)),
    "reservation-ignored": ({"memory": {"reservation": 16 * MIB}}, "memory.reservation", str(16 * MIB),
                            str(16 * MIB)),
    "limit-and-reservation-swapped": ({"memory": {"limit": 64 * MIB, "reservation": 16 * MIB}}, "memory.limit",
                                      str(64 * MIB), str(64 * MIB)),
}


@pytest.mark.parametrize("fault", [None, *LIMIT_FAULTS])
def test_each_limit_reaches_its_file(box: Box, path: str, fault: str | None) -> None:
    cases = {fault: LIMIT_FAULTS[fault]} if fault else LIMIT_FAULTS
    for name, (resources, which, v1, v2) in cases.items():
        if name == "cpuset-ignored" and (os.cpu_count() or 1) < 2:
            continue  # one CPU: "0" is also what the parent has
        if name == "swap-not-converted" and not _has_swap_file():
            continue
        box.config["linux"].pop("resources", None)
        with_cgroup(box, path, resources)
        seen, result = box.while_running(WAIT, lambda _pid, which=which: knob(opened(path), which),
                                         faults=frozenset({fault} if fault else ()))
        assert result.status == 0, result
        expect(seen == (v2 if V2 else v1), fault)


def _has_swap_file() -> bool:
    memory = LAYOUT.hierarchy_for("memory")
    if memory is None:
        return False
    if not V2:
        return Path(memory.mountpoint, "memory.memsw.limit_in_bytes").exists()
    return any(Path(memory.mountpoint).glob("*/memory.swap.max"))


@pytest.mark.parametrize("fault", faults("period-clamped"))
def test_a_period_out_of_range_is_refused_before_anything_runs(box: Box, path: str, fault: str | None) -> None:
    with_cgroup(box, path, {"cpu": {"quota": 1000, "period": 500}})
    result = box.run("echo ran", faults=frozenset({fault} if fault else ()))
    if result.error is not None:
        assert isinstance(result.error, ConfigError) and result.error.field == "linux.resources.cpu.period"
    expect(result.out == "" and result.error is not None and gone(path), fault)


@pytest.mark.parametrize("fault", faults("unified-ignored"))
def test_unified_needs_v2_and_is_written_there(box: Box, path: str, fault: str | None) -> None:
    """v1 or hybrid: an error, as runc gives (CG-OCI-006); v2: the file gets the value as given."""
    with_cgroup(box, path, {"unified": {"pids.max": "7"}})
    if V2:
        seen, result = box.while_running(WAIT, lambda _pid: knob(opened(path), "pids.limit"),
                                         faults=frozenset({fault} if fault else ()))
        expect(seen == "7", fault)
        return
    result = box.run("echo ran", faults=frozenset({fault} if fault else ()))
    expect(result.error is not None and "unified resources need cgroup v2" in str(result.error), fault)


@pytest.mark.parametrize("fault", faults("freeze-ignored"))
def test_freeze_freezes_the_running_container(box: Box, path: str, fault: str | None) -> None:
    """What a probe's `pause` of the reference runtime calls: the kernel then reports the cgroup frozen."""
    with_cgroup(box, path, {"pids": {"limit": 20}})

    def pause(_pid: int) -> bool:
        cgroup = opened(path, fault)
        cgroup.freeze()
        frozen = cgroup.frozen()
        cgroup.thaw()
        return frozen

    frozen, result = box.while_running(WAIT, pause)
    assert result.status == 0, result
    expect(frozen, fault)


# `conformance ref run` with docker's resource flags -------------------------------------------------------


def test_an_image_run_with_docker_like_flags_gets_its_limits_and_leaves_no_cgroup(scratch: Path) -> None:
    """run_image(resources=...) gives the container a cgroup at /<container id>: --memory 32m stops the hog,
    --pids-limit 2 the second fork; the cgroup is gone afterwards."""
    from test_ref_container import busybox_image

    from conformance.ref.container import run_image
    from conformance.ref.runflags import resources_from_flags

    image = busybox_image(scratch)
    with open(os.devnull, "wb") as null:
        hog = run_image(image, ["sh", "-c", HOG], stdout=null.fileno(), stderr=null.fileno(),
                        resources=resources_from_flags({"memory": "32m", "memory-swap": "32m"}))
        forks = run_image(image, ["sh", "-c", "sleep 9 & sleep 9 & echo never"], stdout=null.fileno(),
                          stderr=null.fileno(), resources=resources_from_flags({"pids-limit": "2"}))
    assert (hog, forks) == (137, 2)
    assert [p for root in hierarchy_roots() for p in root.glob("conformance-run-*")] == []
