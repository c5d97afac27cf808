"""CG-MEM-*: memory limits written to the kernel's files, and the OOM killer and throttling they bring."""

from __future__ import annotations

import pytest

from conformance.scenarios import cgroups as cg
from conformance.suite.cgroups import MIB, at, first, knob, mode, observe, own, ran
from conformance.target import Target

_READ = {"running": ["read"]}


def _limits(target: Target, memory: dict[str, int]) -> tuple[str, dict[str, object]]:
    """The layout and the knobs of a container given these memory settings."""
    seen = observe(target, cg.run("at running", resources={"memory": memory}, checkpoints=_READ))
    run = first(seen)
    ran(target, run)
    return mode(seen), dict(own(target, at(target, run, "running")))


@pytest.mark.clause("CG-MEM-001")
def test_limit_is_the_hard_limit(target: Target) -> None:
    """memory.limit 64 MiB MUST read back from memory.max (v2) / memory.limit_in_bytes (v1)."""
    _layout, values = _limits(target, {"limit": 64 * MIB})
    target.expect("hard memory limit", 64 * MIB, values.get("memory.limit"))


@pytest.mark.clause("CG-MEM-002")
def test_unaligned_limit_is_page_rounded(target: Target) -> None:
    """A limit of 64 MiB + 1000 bytes MUST read back as a page multiple within one page of it."""
    asked = 64 * MIB + 1000
    seen = observe(target, cg.run("at running", resources={"memory": {"limit": asked}}, checkpoints=_READ))
    run = first(seen)
    ran(target, run)
    point = at(target, run, "running")
    own(target, point)
    got = knob(target, point, "memory.limit")
    page = int(seen["page_size"])
    target.expect_that("hard limit read back", isinstance(got, int) and got % page == 0 and abs(got - asked) < page,
                       f"a multiple of {page} within one page of {asked}", got)
    target.note("rounding", "up" if isinstance(got, int) and got > asked else "down")


@pytest.mark.clause("CG-MEM-003")
def test_reservation_is_the_soft_limit(target: Target) -> None:
    """memory.reservation 48 MiB SHOULD read back from memory.low (v2) / memory.soft_limit_in_bytes (v1)."""
    _layout, values = _limits(target, {"limit": 128 * MIB, "reservation": 48 * MIB})
    target.expect("soft limit", 48 * MIB, values.get("memory.reservation"))


@pytest.mark.clause("CG-MEM-004")
def test_swap_is_memory_plus_swap(target: Target) -> None:
    """Swap 96 MiB with limit 64 MiB MUST be memsw 96 MiB (v1) or swap.max 32 MiB (v2)."""
    layout, values = _limits(target, {"limit": 64 * MIB, "swap": 96 * MIB})
    if layout == "v2":
        target.expect("memory.swap.max (swap alone)", 32 * MIB, values.get("memory.swap.max"))
    else:
        target.expect("memory.memsw.limit_in_bytes (memory+swap)", 96 * MIB, values.get("memory.memsw"))


@pytest.mark.clause("CG-MEM-005")
def test_swap_equal_to_limit_means_no_swap(target: Target) -> None:
    """Swap == limit == 64 MiB MUST leave no swap: swap.max 0 (v2), memsw equal to the limit (v1)."""
    layout, values = _limits(target, {"limit": 64 * MIB, "swap": 64 * MIB})
    if layout == "v2":
        target.expect("memory.swap.max", 0, values.get("memory.swap.max"))
    else:
        target.expect("memory.memsw.limit_in_bytes", 64 * MIB, values.get("memory.memsw"))


@pytest.mark.clause("CG-MEM-006")
def test_allocating_past_the_limit_is_oom_killed(target: Target) -> None:
    """A hog under 32 MiB (no swap) MUST die by SIGKILL (status 137) and oom_kill MUST count it."""
    script = f"{cg.MEMORY_HOG}; echo hog=$?; at after"
    seen = observe(target, cg.run(script, resources={"memory": {"limit": 32 * MIB, "swap": 32 * MIB}},
                                  checkpoints={"after": ["read"]}, timeout=150), timeout=180)
    run = first(seen)
    said = ran(target, run)
    target.expect("the hog's exit status", "137", said.get("hog"), hint="128 + SIGKILL: the OOM killer's signal")
    events = knob(target, at(target, run, "after"), "memory.events")
    target.expect_that("oom_kill count", events.get("oom_kill", 0) >= 1, ">= 1", events)


@pytest.mark.clause("CG-MEM-007")
def test_process_under_the_limit_survives(target: Target) -> None:
    """A process touching about 48 MiB under a 256 MiB limit MUST finish, with no OOM kill counted."""
    grow = "sh -c 'x=a; i=0; while [ $i -lt 24 ]; do x=$x$x; i=$((i+1)); done; echo len=${#x}'"
    seen = observe(target, cg.run(f"{grow}; echo rc=$?; at after",
                                  resources={"memory": {"limit": 256 * MIB, "reservation": 16 * MIB,
                                                        "swap": 256 * MIB}},
                                  checkpoints={"after": ["read"]}))
    run = first(seen)
    said = ran(target, run)
    target.expect("the allocating process's exit status", "0", said.get("rc"))
    events = knob(target, at(target, run, "after"), "memory.events")
    target.expect("oom_kill count", 0, events.get("oom_kill", 0))


@pytest.mark.clause("CG-MEM-008")
@pytest.mark.requires("cgroup-v2")
def test_memory_high_throttles_without_kill(target: Target) -> None:
    """128 MiB of page cache under memory.high 32 MiB MUST complete, count high events and kill nothing."""
    script = "dd if=/dev/zero of=/disk/f bs=1M count=128 2>/dev/null; echo rc=$?; at after; rm -f /disk/f"
    seen = observe(target, cg.run(script, resources={"unified": {"memory.high": str(32 * MIB)}}, disk=True,
                                  checkpoints={"after": ["read"]}, timeout=240), timeout=300)
    run = first(seen)
    said = ran(target, run)
    target.expect("dd's exit status", "0", said.get("rc"))
    point = at(target, run, "after")
    events = knob(target, point, "memory.events")
    target.expect_that("memory.events high", events.get("high", 0) > 0, "> 0 (throttled)", events)
    target.expect("memory.events oom_kill", 0, events.get("oom_kill", 0))


@pytest.mark.clause("CG-MEM-009")
def test_usage_counts_what_was_allocated(target: Target) -> None:
    """After 32 MiB written to /dev/shm the usage MUST be at least 32 MiB and within 32 MiB over it."""
    script = "dd if=/dev/zero of=/dev/shm/f bs=1M count=32 2>/dev/null; echo rc=$?; at written"
    seen = observe(target, cg.run(script, resources={"memory": {"limit": 256 * MIB}},
                                  checkpoints={"written": ["read"]}))
    run = first(seen)
    said = ran(target, run)
    target.expect("dd's exit status", "0", said.get("rc"))
    point = at(target, run, "written")
    own(target, point)
    usage = knob(target, point, "memory.current")
    target.expect_that("memory usage", 32 * MIB <= usage <= 64 * MIB, "between 32 and 64 MiB", usage)
