"""HOST-CGROUP-*: a cgroup hierarchy is there, and memory, pids, cpu and cpuset limits read back."""

from __future__ import annotations

import pytest

from conformance.scenarios import host
from conformance.target import Target


@pytest.mark.clause("HOST-CGROUP-001")
def test_a_cgroup_hierarchy_is_mounted(target: Target) -> None:
    """/sys/fs/cgroup MUST hold the v2 hierarchy or v1 hierarchies with controllers."""
    seen = target.observe(host.cgroup_mounts())
    target.note("cgroup_mode", seen["mode"])
    target.expect_that("cgroup layout under /sys/fs/cgroup", seen["mode"] in ("v1", "v2", "hybrid"),
                       "v1, v2 or hybrid", seen["mode"])


def _limit_reads_back(target: Target, controller: str) -> None:
    __tracebackhide__ = True
    seen = target.observe(host.cgroup_limit(controller))
    target.note("cgroup_mode", seen["mode"])
    target.expect_that(f"a hierarchy with the {controller} controller", seen["available"],
                       f"{controller} is mounted (v1) or enabled in cgroup.controllers (v2)", "none")
    target.note("cgroup_version", seen["version"])
    target.expect(f"errors writing {controller} limits", {}, seen["write_errors"])
    target.expect(f"{controller} limit read back from {seen['cgroup']}", seen["requested"], seen["read"])


@pytest.mark.clause("HOST-CGROUP-002")
def test_memory_limit_reads_back(target: Target) -> None:
    """A 64 MiB memory hard limit MUST read back as written."""
    _limit_reads_back(target, "memory")


@pytest.mark.clause("HOST-CGROUP-003")
def test_pids_limit_reads_back(target: Target) -> None:
    """pids.max = 42 MUST read back as written."""
    _limit_reads_back(target, "pids")


@pytest.mark.clause("HOST-CGROUP-004")
def test_cpu_bandwidth_limit_reads_back(target: Target) -> None:
    """A quota of 50 ms per 100 ms period MUST read back as written."""
    _limit_reads_back(target, "cpu")


@pytest.mark.clause("HOST-CGROUP-005")
def test_cpuset_restriction_reads_back(target: Target) -> None:
    """cpuset.cpus set to one CPU of the parent's SHOULD read back as written."""
    _limit_reads_back(target, "cpuset")


@pytest.mark.clause("HOST-CGROUP-006")
def test_writing_a_pid_to_cgroup_procs_moves_it(target: Target) -> None:
    """After writing a PID to cgroup.procs, /proc/PID/cgroup MUST name that cgroup."""
    seen = target.observe(host.cgroup_procs())
    target.note("cgroup_mode", seen["mode"])
    target.expect_that("a cgroup hierarchy", seen["available"], "one is mounted", "none")
    target.expect("the cgroup in /proc/PID/cgroup", seen["expected"], seen["seen"])
    target.expect("PID listed in cgroup.procs", True, seen["member"])


@pytest.mark.clause("HOST-CGROUP-007")
def test_host_runs_unified_cgroup_v2(target: Target) -> None:
    """/sys/fs/cgroup SHOULD be the unified v2 hierarchy with memory, pids and cpu available."""
    seen = target.observe(host.cgroup_mounts())
    target.note("cgroup_mode", seen["mode"])
    target.expect("cgroup layout", "v2", seen["mode"] if seen["unified_at_root"] else f"{seen['mode']} "
                  "(no cgroup2 at /sys/fs/cgroup)",
                  hint="boot with systemd.unified_cgroup_hierarchy=1 or cgroup_no_v1=all")
    missing = sorted({"memory", "pids", "cpu"} - set(seen["unified_controllers"]))
    target.expect("controllers missing from cgroup.controllers", [], missing)
