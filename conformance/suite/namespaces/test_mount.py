"""NS-MNT-*: the container's mount namespace, its root and its default filesystems."""

from __future__ import annotations

import re

import pytest

from conformance.scenarios import namespaces as ns
from conformance.suite.namespaces import mountinfo_lines, ran
from conformance.target import Target

#: Where runtimes mount things in a container: the rootfs, /proc, /sys, /dev, the test's /chan, and the
#: files engines bind in (/etc/hostname, /etc/hosts, /etc/resolv.conf, /run/.containerenv).
_CONTAINER_MOUNTS = re.compile(r"^/$|^/(proc|sys|dev|chan|run)(/|$)|^/etc/(hostname|hosts|resolv\.conf)$")
_PRINT_MOUNTINFO = "while read -r line; do echo \"mi=$line\"; done < /proc/self/mountinfo; "


@pytest.mark.clause("NS-MNT-001")
def test_mount_made_inside_is_invisible_outside(target: Target) -> None:
    """The container mounts a tmpfs on /chan/inner (a host dir bound in): the host MUST NOT see a mount there."""
    seen = target.observe(ns.run("mount -t tmpfs conformance /chan/inner && echo mounted=yes; wait_go",
                                 caps=["CAP_SYS_ADMIN"], host=["watch-mounts"]))
    said = ran(target, seen)
    target.expect("mount inside", "yes", said.get("mounted"))
    target.expect("is /chan/inner a mount point on the host", False, seen["host"]["during"]["inner_is_mount"],
                  hint="mount_namespaces(7): the container's mounts are its own (rootfs propagation private)")


@pytest.mark.clause("NS-MNT-002")
def test_host_mount_made_later_is_invisible_inside(target: Target) -> None:
    """While the container runs the host mounts a tmpfs holding `marker` on /chan/late: it MUST NOT show inside."""
    seen = target.observe(ns.run("wait_go; [ -e /chan/late/marker ] && echo late=visible || echo late=absent",
                                 host=["late-mount"]))
    said = ran(target, seen)
    target.expect("the host did its mount while the container waited", True, seen["host"]["during"]["ready"])
    target.expect("the container looked after the host's mount (wait_go)", "yes", said.get("go"))
    target.expect("/chan/late/marker inside", "absent", said.get("late"),
                  hint="the rootfs propagation is private by default (runtime-spec rootfsPropagation)")


@pytest.mark.clause("NS-MNT-003")
def test_root_is_the_root_of_the_mount_namespace(target: Target) -> None:
    """The container's root MUST be its mount namespace's root (pivot_root), not a chroot into a host path."""
    seen = target.observe(ns.run("echo root=$(ls /bin/busybox); wait_go"))
    said = ran(target, seen)
    target.expect("/bin/busybox inside", "/bin/busybox", said.get("root"))
    init = seen["host"]["during"].get("init") or {}
    target.expect("readlink /proc/<init>/root from the host", "/", init.get("root"),
                  hint="after pivot_root the rootfs is the namespace's root; a chroot leaves a host path")


@pytest.mark.clause("NS-MNT-004")
def test_no_host_mount_is_left_in_the_container(target: Target) -> None:
    """/proc/self/mountinfo MUST hold only the container's own mounts: no old root, no host mount left."""
    said_text = target.observe(ns.run(_PRINT_MOUNTINFO))
    ran(target, said_text)
    points = [point for point, _fstype in mountinfo_lines(str(said_text.get("stdout")))]
    strays = [p for p in points if not _CONTAINER_MOUNTS.match(p)]
    target.expect_that("mount points", bool(points), "the container's mountinfo", points)
    target.expect("mounts outside /, /proc, /sys, /dev, /run, /chan and the engines' /etc files", [], strays,
                  hint="pivot_root(2): the old root is detached (umount2 MNT_DETACH) after the switch")


@pytest.mark.clause("NS-MNT-005")
def test_default_filesystems_are_mounted(target: Target) -> None:
    """/proc MUST be proc, /sys sysfs, /dev/pts devpts and /dev/shm tmpfs."""
    seen = target.observe(ns.run(_PRINT_MOUNTINFO))
    ran(target, seen)
    types = dict(mountinfo_lines(str(seen.get("stdout"))))
    wanted = {"/proc": "proc", "/sys": "sysfs", "/dev/pts": "devpts", "/dev/shm": "tmpfs"}
    target.expect("file system types", wanted, {point: types.get(point) for point in wanted})


@pytest.mark.clause("NS-MNT-006")
def test_readonly_root_cannot_be_written(target: Target) -> None:
    """root.readonly: creating /conformance-x MUST fail; /tmp of a tmpfs mount is not what is tested."""
    said = ran(target, target.observe(ns.run("touch /conformance-x 2>/dev/null; echo rc=$?", readonly_root=True)))
    target.expect_that("touch / status", said.get("rc") not in (None, "0"), "non-zero (EROFS)", said.get("rc"))


@pytest.mark.clause("NS-MNT-010")
def test_root_is_the_image_and_the_host_root_unreachable(target: Target) -> None:
    """The root MUST be the image's, with no way out to the host's root.

    / shows the image's files, /.. is / itself, and a file the probe left beside the rootfs on the host is
    found nowhere in the container's tree.
    """
    script = ("[ -x /bin/busybox ] && echo image=yes; "
              "[ \"$(stat -c %d:%i /..)\" = \"$(stat -c %d:%i /)\" ] && echo dotdot=root || echo dotdot=elsewhere; "
              "echo found=$(find / -maxdepth 7 \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o "
              "-name \"$HOST_MARK\" -print 2>/dev/null | head -1)")
    said = ran(target, target.observe(ns.run(script, host=["host-mark"])))
    target.expect("the image's /bin/busybox", "yes", said.get("image"))
    target.expect("/..", "root", said.get("dotdot"))
    target.expect("the host-side marker found in the container", "", said.get("found"),
                  hint="no path in the container may lead to the host's root (an old root left mounted does)")
