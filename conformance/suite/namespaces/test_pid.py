"""NS-PID-*: the container's process tree in its own pid namespace."""

from __future__ import annotations

import pytest

from conformance.scenarios import namespaces as ns
from conformance.suite.namespaces import ran
from conformance.target import Target


@pytest.mark.clause("NS-PID-001")
def test_first_process_is_pid_1(target: Target) -> None:
    """The script's shell is the container's first process: $$ MUST be 1 and /proc/1 MUST be it."""
    said = ran(target, target.observe(ns.run("echo pid=$$; echo cmd=$(tr '\\0' ' ' < /proc/1/cmdline)")))
    target.expect("$$", "1", said.get("pid"))
    target.expect_that("/proc/1/cmdline", said.get("cmd", "").startswith("/bin/sh -c"), "/bin/sh -c ...",
                       said.get("cmd"))


@pytest.mark.clause("NS-PID-002")
def test_only_own_processes_are_visible(target: Target) -> None:
    """/proc MUST list only the container's processes: a handful, and not the probe's host PID."""
    script = ("echo procs=$(ls /proc | grep -c '^[0-9][0-9]*$'); "
              "[ -e /proc/$HOST_PID ] && echo host=visible || echo host=absent")
    said = ran(target, target.observe(ns.run(script)))
    target.expect("the probe's PID in /proc", "absent", said.get("host"))
    target.expect_that("processes in /proc", said.get("procs", "").isdigit() and int(said["procs"]) <= 5,
                       "at most 5 (the shell and its commands)", said.get("procs"))


@pytest.mark.clause("NS-PID-003")
def test_host_processes_cannot_be_signalled(target: Target) -> None:
    """A kill -0 of the probe's host PID from inside MUST fail (ESRCH: no such process there)."""
    said = ran(target, target.observe(ns.run("kill -0 $HOST_PID 2>/dev/null; echo rc=$?")))
    target.expect_that("kill -0 <host pid> status", said.get("rc") not in (None, "0"), "non-zero", said.get("rc"))


@pytest.mark.clause("NS-PID-004")
def test_exit_of_pid_1_kills_the_namespace(target: Target) -> None:
    """A background sleeper outlives nothing: when PID 1 exits, no process of the container MUST remain."""
    seen = target.observe(ns.run("sleep 300 & echo bg=$!"))
    ran(target, seen)
    target.expect("container processes alive after PID 1 exited", 0, seen["host"]["stragglers"],
                  hint="pid_namespaces(7): the kernel SIGKILLs the namespace when its init exits")


@pytest.mark.clause("NS-PID-005")
def test_pid_1_has_no_parent_inside(target: Target) -> None:
    """The container's first process MUST see its PPid as 0: its parent is outside the namespace."""
    said = ran(target, target.observe(ns.run("echo ppid=$(awk '/^PPid:/ {print $2}' /proc/$$/status)")))
    target.expect("PPid of PID 1", "0", said.get("ppid"))
