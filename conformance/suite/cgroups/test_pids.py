"""CG-PID-*: the pids limit written to pids.max, forks refused past it, and the counters that show it."""

from __future__ import annotations

import pytest

from conformance.scenarios import cgroups as cg
from conformance.suite.cgroups import at, first, knob, observe, own, ran
from conformance.target import Target

#: Twelve sleepers under a limit of 8, from a subshell (a failed fork ends the busybox shell that tried it):
#: the shell, the subshell and six sleepers fit, the other forks fail. The fork
#: errors go to a file the probe reads, since no command can be forked once the limit is reached.
_FORK_PAST = "(for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 300 & done) 2>/chan/out.err; at forked"


@pytest.mark.clause("CG-PID-001")
def test_limit_is_written_to_pids_max(target: Target) -> None:
    """pids.limit 32 MUST read back as pids.max 32."""
    seen = observe(target, cg.run("at running", resources={"pids": {"limit": 32}}, checkpoints={"running": ["read"]}))
    run = first(seen)
    ran(target, run)
    target.expect("pids.max", 32, knob(target, at(target, run, "running"), "pids.max"))


@pytest.mark.clause("CG-PID-002")
def test_limit_zero_is_zero(target: Target) -> None:
    """pids.limit 0 SHOULD read back as pids.max 0 (the script uses shell builtins only: it forks nothing)."""
    seen = observe(target, cg.run("at running", resources={"pids": {"limit": 0}}, checkpoints={"running": ["read"]}))
    run = first(seen)
    ran(target, run)
    got = knob(target, at(target, run, "running"), "pids.max")
    target.note("pids.max for a limit of 0", "max" if got is None else got)
    target.expect("pids.max", 0, got, hint="None is 'max': the runtime took 0 as no limit")


@pytest.mark.clause("CG-PID-003")
def test_fork_past_the_limit_fails_with_eagain(target: Target) -> None:
    """With pids.max 8 the extra forks MUST fail with EAGAIN while the sleepers already started live on."""
    seen = observe(target, cg.run(_FORK_PAST, resources={"pids": {"limit": 8}}, checkpoints={"forked": ["read"]}))
    run = first(seen)
    ran(target, run)
    point = at(target, run, "forked")
    errors = run.get("files", {}).get("out.err", "")
    target.expect_that("the shell's fork errors", "Resource temporarily unavailable" in errors,
                       "EAGAIN: 'Resource temporarily unavailable'", errors[-300:] or "(no error)")
    own(target, point)
    current = knob(target, point, "pids.current")
    target.expect_that("tasks in the cgroup while at the limit", 2 <= current <= 8, "the shell and its sleepers, "
                       "at most 8", current)
    target.expect("container processes still alive", current, point.get("container_processes"))


@pytest.mark.clause("CG-PID-004")
def test_refused_fork_is_counted(target: Target) -> None:
    """Each refused fork MUST show in pids.events max."""
    seen = observe(target, cg.run(_FORK_PAST, resources={"pids": {"limit": 8}}, checkpoints={"forked": ["read"]}))
    run = first(seen)
    ran(target, run)
    events = knob(target, at(target, run, "forked"), "pids.events")
    target.expect_that("pids.events max", events.get("max", 0) >= 1, ">= 1", events)


@pytest.mark.clause("CG-PID-005")
def test_pids_current_counts_the_processes(target: Target) -> None:
    """With the shell and five sleepers alive, pids.current MUST equal the container's process count."""
    script = "for i in 1 2 3 4 5; do sleep 300 & done; at running"
    seen = observe(target, cg.run(script, resources={"pids": {"limit": 64}}, checkpoints={"running": ["read"]}))
    run = first(seen)
    ran(target, run)
    point = at(target, run, "running")
    own(target, point)
    current = knob(target, point, "pids.current")
    target.expect_that("pids.current", current >= 6, ">= 6 (the shell and five sleepers)", current)
    target.expect("pids.current against the container's processes seen from the host",
                  point.get("container_processes"), current)
