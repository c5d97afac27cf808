"""HOST-NS-*, HOST-USERNS-*, HOST-PIVOT-*: each namespace type can be created, and behaves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from conformance.scenarios import host
from conformance.scenarios.namespaces import FALLBACK_TUNNELS
from conformance.target import Target


def _created(target: Target, seen: Mapping[str, Any], link: str) -> None:
    __tracebackhide__ = True
    target.expect_that(f"unshare for /proc/self/ns/{link}", "child_error" not in seen and seen.get("supported") is True,
                       "the namespace is created", seen.get("child_error") or seen.get("error") or seen)
    target.expect_that(f"/proc/self/ns/{link} inode", seen["inode_after"] != seen["inode_before"],
                       f"an inode other than the parent's {seen['inode_before']}", seen["inode_after"])


@pytest.mark.clause("HOST-NS-MOUNT-001")
def test_mount_namespace_can_be_created(target: Target) -> None:
    """unshare(CLONE_NEWNS) MUST give the process a mount namespace other than its parent's."""
    _created(target, target.observe(host.namespace("mnt")), "mnt")


@pytest.mark.clause("HOST-NS-UTS-001")
def test_uts_namespace_keeps_its_hostname(target: Target) -> None:
    """A hostname set in a new UTS namespace MUST be seen inside and MUST NOT change the host's."""
    seen = target.observe(host.namespace("uts", hostname="conformance-uts"))
    _created(target, seen, "uts")
    target.expect("hostname inside", "conformance-uts", seen["hostname_inside"])
    target.expect("host hostname after", seen["hostname_before"], seen["hostname_after"])


@pytest.mark.clause("HOST-NS-IPC-001")
def test_ipc_namespace_can_be_created(target: Target) -> None:
    """unshare(CLONE_NEWIPC) MUST give the process an IPC namespace other than its parent's."""
    _created(target, target.observe(host.namespace("ipc")), "ipc")


@pytest.mark.clause("HOST-NS-PID-001")
def test_first_child_in_a_pid_namespace_is_pid_1(target: Target) -> None:
    """After unshare(CLONE_NEWPID) the first child MUST be PID 1 in a new PID namespace."""
    seen = target.observe(host.namespace("pid"))
    _created(target, seen, "pid")
    target.expect("getpid() of the first child", 1, seen["first_child_pid"])


@pytest.mark.clause("HOST-NS-NET-001")
def test_new_network_namespace_shows_no_host_device(target: Target) -> None:
    """A new network namespace MUST show none of the host's devices: its only interface is a fresh lo."""
    seen = target.observe(host.namespace("net"))
    _created(target, seen, "net")
    interfaces = list(seen["interfaces"])
    target.expect("network interfaces (the kernel's fallback tunnels left out)", ["lo"],
                  [name for name in interfaces if name not in FALLBACK_TUNNELS])


@pytest.mark.clause("HOST-NS-USER-001")
def test_user_namespace_can_be_created(target: Target) -> None:
    """unshare(CLONE_NEWUSER) SHOULD give the process a user namespace other than its parent's."""
    _created(target, target.observe(host.namespace("user")), "user")


@pytest.mark.clause("HOST-NS-CGROUP-001")
def test_cgroup_namespace_roots_the_view(target: Target) -> None:
    """In a new cgroup namespace /proc/self/cgroup SHOULD show the process's cgroup as /."""
    seen = target.observe(host.namespace("cgroup"))
    _created(target, seen, "cgroup")
    target.expect("cgroup paths in /proc/self/cgroup", ["/"], seen["cgroup_paths"])


@pytest.mark.clause("HOST-NS-TIME-001")
def test_time_namespace_can_be_created(target: Target) -> None:
    """unshare(CLONE_NEWTIME) SHOULD give the process's children a time namespace of their own."""
    _created(target, target.observe(host.namespace("time")), "time_for_children")


@pytest.mark.clause("HOST-USERNS-001")
def test_unprivileged_user_can_be_root_in_a_user_namespace(target: Target) -> None:
    """Uid 65534 SHOULD be able to create a user namespace and map itself to uid 0 in it."""
    seen = target.observe(host.unprivileged_userns(65534))
    target.expect_that("user.max_user_namespaces", seen["max_user_namespaces"] > 0, "more than 0",
                       seen["max_user_namespaces"])
    target.expect_that("unshare(CLONE_NEWUSER) and uid_map as uid 65534", "child_error" not in seen,
                       "both succeed", seen.get("child_error"))
    target.expect("uid inside", 0, seen["uid_inside"])


@pytest.mark.clause("HOST-PIVOT-001")
def test_pivot_root_hides_the_old_root(target: Target) -> None:
    """pivot_root into a fresh root MUST work, and after the old root is detached no host path is reachable."""
    seen = target.observe(host.pivot_root())
    target.expect_that("pivot_root(2)", "child_error" not in seen, "pivot_root succeeds", seen.get("child_error"))
    target.expect("entries of the new /", ["MARKER"], seen["root_entries"])
    target.expect("host paths reachable from the new root", [], seen["host_paths_reachable"])


@pytest.mark.clause("HOST-SECCOMP-001")
def test_seccomp_filter_can_be_installed(target: Target) -> None:
    """After installing a seccomp filter, /proc/self/status SHOULD report Seccomp mode 2."""
    seen = target.observe(host.seccomp())
    target.expect("Seccomp field in /proc/self/status", "2", seen.get("seccomp_mode", seen.get("child_error")))
