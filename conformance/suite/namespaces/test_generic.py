"""NS-GEN-*: which namespaces a container gets, how it joins one, and which configurations are errors."""

from __future__ import annotations

import pytest

from conformance.scenarios import namespaces as ns
from conformance.suite.namespaces import PRINT_NAMESPACES, namespaces_inside, ran
from conformance.target import Target


@pytest.mark.clause("NS-GEN-001")
def test_each_requested_namespace_is_new(target: Target) -> None:
    """pid, network, ipc, uts, mount, cgroup asked for: each /proc/self/ns inode MUST differ from the host's."""
    seen = target.observe(ns.run(PRINT_NAMESPACES))
    inside = namespaces_inside(ran(target, seen))
    host = seen["host"]["ns"]
    for kind in ns.DEFAULT_NAMESPACES:
        target.expect_that(f"{kind} namespace", inside[kind] is not None and inside[kind] != host.get(kind),
                           f"a new one (not the host's {host.get(kind)})", inside[kind])


@pytest.mark.clause("NS-GEN-002")
def test_namespace_not_requested_is_shared(target: Target) -> None:
    """Only pid and mount asked for: network, ipc, uts and cgroup MUST be the runtime's (the host's) own."""
    seen = target.observe(ns.run(PRINT_NAMESPACES, namespaces=("pid", "mount")))
    inside = namespaces_inside(ran(target, seen))
    host = seen["host"]["ns"]
    for kind in ("network", "ipc", "uts", "cgroup"):
        target.expect(f"{kind} namespace", host.get(kind), inside[kind], hint="a type left out is inherited")


@pytest.mark.clause("NS-GEN-003")
def test_namespace_path_is_joined(target: Target) -> None:
    """With network given as a path to the host's network namespace: the container MUST be in that namespace."""
    seen = target.observe(ns.run(PRINT_NAMESPACES, join={"type": "network", "from": "host"}))
    inside = namespaces_inside(ran(target, seen))
    target.expect("network namespace", seen["host"]["ns"].get("network"), inside["network"])
    target.expect_that("uts namespace", inside["uts"] != seen["host"]["ns"].get("uts"),
                       "still a new one (only network was given a path)", inside["uts"])


@pytest.mark.clause("NS-GEN-004")
def test_duplicate_namespace_type_is_an_error(target: Target) -> None:
    """linux.namespaces with uts twice: the runtime MUST refuse it, and the process MUST NOT run."""
    raw = [{"type": t} for t in ("pid", "mount", "uts", "uts")]
    seen = target.observe(ns.run("echo started=yes", raw_namespaces=raw))
    target.expect_that("exit status", seen.get("exit") not in (0, None), "non-zero (refused)", seen.get("exit"))
    target.expect("the script's output", None, ns.lines(seen).get("started"))


@pytest.mark.clause("NS-GEN-005")
def test_namespace_path_of_another_type_is_an_error(target: Target) -> None:
    """With ipc given the path of a mount namespace: the runtime MUST refuse it, and the process MUST NOT run."""
    raw = [{"type": "pid"}, {"type": "mount"}, {"type": "ipc", "path": "/proc/self/ns/mnt"}]
    seen = target.observe(ns.run("echo started=yes", raw_namespaces=raw))
    target.expect_that("exit status", seen.get("exit") not in (0, None), "non-zero (refused)", seen.get("exit"))
    target.expect("the script's output", None, ns.lines(seen).get("started"))
