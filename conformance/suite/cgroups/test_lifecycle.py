"""CG-LIFE-*: where the container's processes are, and that nothing of the container is left after it."""

from __future__ import annotations

import pytest

from conformance.scenarios import cgroups as cg
from conformance.suite.cgroups import MIB, at, first, knob, observe, own, ran
from conformance.target import Target

#: Limits that mark the container's own cgroup: no other cgroup on the host has exactly these.
MARK = {"memory": {"limit": 200 * MIB}, "pids": {"limit": 61}}


@pytest.mark.clause("CG-LIFE-001")
def test_processes_run_in_the_limited_cgroup(target: Target) -> None:
    """The shell and a child it starts MUST both be in the cgroup that holds the container's limits."""
    seen = observe(target, cg.run("sleep 300 & at running", resources=MARK, checkpoints={"running": ["read"]}))
    run = first(seen)
    ran(target, run)
    point = at(target, run, "running")
    own(target, point)
    target.expect("memory limit of the shell's cgroup", 200 * MIB, knob(target, point, "memory.limit"))
    target.expect("pids limit of the shell's cgroup", 61, knob(target, point, "pids.max"))
    target.expect_that("processes in that cgroup", point.get("procs", 0) >= 2, "the shell and its sleep (>= 2)",
                       point.get("procs"))


@pytest.mark.clause("CG-LIFE-002")
def test_absolute_cgroups_path_is_from_the_mount_point(target: Target) -> None:
    """/proc/<init>/cgroup MUST show cgroupsPath itself in every hierarchy the container is limited in."""
    seen = observe(target, cg.run("at running", resources=MARK, checkpoints={"running": ["read"]}, oci_only=True))
    run = first(seen)
    ran(target, run)
    point = at(target, run, "running")
    for key in ("memory", "pids") if "memory" in point["cgroup"] else ("unified",):
        target.expect(f"the container's {key} cgroup", seen["cgroups_path"], point["cgroup"].get(key))


@pytest.mark.clause("CG-LIFE-003")
def test_same_cgroups_path_same_place(target: Target) -> None:
    """Two runs with one cgroupsPath MUST land in the same cgroup: the one the path names."""
    seen = observe(target, cg.run("at running", resources=MARK, checkpoints={"running": ["read"]}, runs=2,
                                  oci_only=True))
    places = []
    for run in seen["runs"]:
        ran(target, run)
        places.append(at(target, run, "running")["cgroup"])
    target.expect("the second run's cgroups", places[0], places[1])
    target.expect("the cgroup both runs are in", seen["cgroups_path"],
                  places[0].get("memory", places[0].get("unified")))


@pytest.mark.clause("CG-LIFE-004")
def test_cgroup_is_removed_after_exit(target: Target) -> None:
    """Once the container exited, none of the cgroup dirs it was in MUST exist."""
    seen = observe(target, cg.run("at running", resources=MARK, checkpoints={"running": ["read"]}))
    run = first(seen)
    ran(target, run)
    own(target, at(target, run, "running"))
    left = sorted(key for key, exists in run["after"]["exists"].items() if exists)
    target.expect("the container's cgroup dirs still there after it exited", [], left)


@pytest.mark.clause("CG-LIFE-005")
def test_no_process_outlives_the_container(target: Target) -> None:
    """Without a PID namespace a background sleep survives its shell; deleting the container MUST kill it."""
    namespaces = ("network", "ipc", "uts", "mount", "cgroup")
    seen = observe(target, cg.run("sleep 300 & at running", resources=MARK, namespaces=namespaces,
                                  checkpoints={"running": ["read"]}))
    run = first(seen)
    if not run.get("lingered"):  # a runtime that waits for the stragglers is deleted instead: no status then
        ran(target, run)
    target.note("the runtime waited for the background process, and was deleted", bool(run.get("lingered")))
    own(target, at(target, run, "running"))
    target.expect("processes left in the container's cgroup", 0, run["after"]["procs_left"])
    target.expect("processes of the container alive after it was deleted", 0, run["after"]["container_processes"])


#: Mount the container's view of its cgroup (v2 where the container sees one unified line, else the
#: v1 pids hierarchy), then write its own PID to the root of that view.
_MOVE_TO_ROOT = (
    "if [ \"$(cat /proc/self/cgroup | wc -l)\" = 1 ]; then mount -t cgroup2 none /mnt; "
    "else mount -t cgroup -o pids none /mnt; fi; echo mounted=$?; "
    "echo view=$(cat /proc/self/cgroup | grep -E '^0::|pids' | head -1); at before; "
    "echo $$ > /mnt/cgroup.procs; echo wrote=$?; at after; umount /mnt")


@pytest.mark.clause("CG-LIFE-006")
def test_cgroup_namespace_cannot_escape(target: Target) -> None:
    """Writing its PID to the root of its cgroup view MUST leave the shell in its own, limited cgroup."""
    seen = observe(target, cg.run(_MOVE_TO_ROOT, resources=MARK, caps=("CAP_SYS_ADMIN",),
                                  checkpoints={"before": ["read"], "after": ["read"]}))
    run = first(seen)
    said = ran(target, run)
    target.expect("mount of the container's cgroup view", "0", said.get("mounted"))
    before, after = at(target, run, "before"), at(target, run, "after")
    target.expect("the shell's cgroups after writing to the root's cgroup.procs", before["cgroup"], after["cgroup"])
    target.expect("pids limit of the shell's cgroup afterwards", 61, knob(target, after, "pids.max"))
