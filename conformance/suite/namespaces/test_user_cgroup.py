"""NS-USER-* (a user namespace with uid/gid maps) and NS-CG-* (the cgroup namespace)."""

from __future__ import annotations

import pytest

from conformance.scenarios import namespaces as ns
from conformance.suite.namespaces import ran
from conformance.target import Target


@pytest.mark.clause("NS-USER-001")
def test_uid_and_gid_maps_are_as_configured(target: Target) -> None:
    """With uid and gid 0 -> 100000, 65536 ids: /proc/self/uid_map and gid_map MUST hold exactly that range."""
    script = "echo uid_map=$(cat /proc/self/uid_map | tr -s ' '); echo gid_map=$(cat /proc/self/gid_map | tr -s ' ')"
    said = ran(target, target.observe(ns.run(script, user_ns=ns.USER_MAP)))
    target.expect("uid_map", "0 100000 65536", said.get("uid_map", "").strip())
    target.expect("gid_map", "0 100000 65536", said.get("gid_map", "").strip())


@pytest.mark.clause("NS-USER-002")
def test_root_inside_is_the_mapped_uid_outside(target: Target) -> None:
    """Root in the container creates /chan/mine: the host MUST see it owned by 100000:100000."""
    seen = target.observe(ns.run("echo id=$(id -u); touch /chan/mine && echo made=yes", user_ns=ns.USER_MAP))
    said = ran(target, seen)
    target.expect("id -u inside", "0", said.get("id"))
    target.expect("owner of /chan/mine on the host", {"uid": 100000, "gid": 100000}, seen["host"]["files"].get("mine"))


@pytest.mark.clause("NS-USER-003")
def test_root_inside_cannot_write_host_files_it_does_not_own(target: Target) -> None:
    """/chan/rootonly is host root's, 0755: container root (host 100000) MUST NOT create a file in it."""
    seen = target.observe(ns.run("touch /chan/rootonly/x 2>/dev/null; echo rc=$?", user_ns=ns.USER_MAP))
    said = ran(target, seen)
    target.expect_that("touch status", said.get("rc") not in (None, "0"), "non-zero (EACCES)", said.get("rc"))
    target.expect("rootonly/x on the host", None, seen["host"]["files"].get("rootonly/x"))


@pytest.mark.clause("NS-USER-004")
def test_unmapped_ids_show_as_the_overflow_id(target: Target) -> None:
    """Host uid 0 is not mapped: the host-root-owned /chan/rootonly MUST show as 65534 inside."""
    said = ran(target, target.observe(ns.run("echo owner=$(stat -c %u:%g /chan/rootonly)", user_ns=ns.USER_MAP)))
    target.expect("owner inside", "65534:65534", said.get("owner"),
                  hint="user_namespaces(7): unmapped ids read as /proc/sys/kernel/overflowuid")


@pytest.mark.clause("NS-CG-001")
def test_cgroup_namespace_root_is_slash(target: Target) -> None:
    """In a new cgroup namespace every line of /proc/self/cgroup MUST end in the path /."""
    seen = target.observe(ns.run("while read -r l; do echo \"cg=$l\"; done < /proc/self/cgroup"))
    ran(target, seen)
    paths = [line.split(":", 2)[2] for line in str(seen.get("stdout")).splitlines()
             if line.startswith("cg=") and line.count(":") >= 2]
    target.expect_that("cgroup paths", bool(paths) and all(p == "/" for p in paths), "all /", paths,
                       hint="cgroup_namespaces(7): the namespace's root is the cgroup it was made in")


@pytest.mark.clause("NS-USER-005")
def test_root_inside_runs_as_the_mapped_uid_on_the_host(target: Target) -> None:
    """The init is uid 0 inside; /proc/<init>/status read from the host MUST show uid 100000."""
    seen = target.observe(ns.run("echo id=$(id -u); wait_go", user_ns=ns.USER_MAP))
    said = ran(target, seen)
    target.expect("id -u inside", "0", said.get("id"))
    target.expect("the init's real uid on the host", 100000, (seen["host"]["during"].get("init") or {}).get("uid"))


@pytest.mark.clause("NS-CG-002")
@pytest.mark.requires("cgroup-v2")
def test_cgroup_mount_shows_only_the_containers_subtree(target: Target) -> None:
    """On a v2 host the container's /sys/fs/cgroup MUST have no directory below it.

    It is the container's own (fresh, childless) cgroup, not the host's hierarchy.
    """
    script = ("grep -q ' /sys/fs/cgroup .* - cgroup2 ' /proc/self/mountinfo && echo mounted=yes; "
              "echo dirs=$(find /sys/fs/cgroup -mindepth 1 -maxdepth 1 -type d | wc -l)")
    said = ran(target, target.observe(ns.run(script)))
    target.expect("cgroup2 at /sys/fs/cgroup", "yes", said.get("mounted"))
    target.expect("cgroups below the container's root", "0", said.get("dirs"),
                  hint="cgroup_namespaces(7): a cgroup2 mount made in the namespace is rooted at its cgroup")
