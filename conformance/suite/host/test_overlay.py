"""HOST-OVERLAY-*: the kernel's overlay filesystem is there and merges, copies up and whites out."""

from __future__ import annotations

import pytest

from conformance.scenarios import host
from conformance.target import Target


@pytest.mark.clause("HOST-OVERLAY-001")
def test_overlay_is_listed_in_proc_filesystems(target: Target) -> None:
    """/proc/filesystems MUST list overlay."""
    seen = target.observe(host.filesystems())
    target.expect_that("/proc/filesystems", "overlay" in seen["types"], "a line for overlay",
                       f"only {', '.join(seen['types'])}", hint="load the module with `modprobe overlay`")


@pytest.mark.clause("HOST-OVERLAY-002")
def test_overlay_merges_two_lowers_and_an_upper(target: Target) -> None:
    """Mount two lowers and an upper; merged MUST hold every name with its top-most layer's content."""
    seen = target.observe(host.overlay_merge())
    target.expect("mount -t overlay", True, seen["mounted"], hint=str(seen.get("error", "")))
    merged = {name: entry.get("content") for name, entry in seen["merged"].items()}
    target.expect("merged/ (name: content)", host.MERGE_EXPECTED, merged)


@pytest.mark.clause("HOST-OVERLAY-003")
def test_writing_a_lower_file_copies_it_up(target: Target) -> None:
    """Overwrite lower/file through merged: upper MUST get the new content, lower MUST keep the old."""
    seen = target.observe(host.overlay_copy_up("file", "lower content", "new content"))
    target.expect("mount -t overlay", True, seen["mounted"], hint=str(seen.get("error", "")))
    target.expect("upper/file", {"type": "file", "content": "new content"}, seen["upper"].get("file"))
    target.expect("lower/file", {"type": "file", "content": "lower content"}, seen["lower"].get("file"))
    target.expect("merged/file", {"type": "file", "content": "new content"}, seen["merged"].get("file"))


@pytest.mark.clause("HOST-OVERLAY-004")
def test_deleting_a_lower_file_leaves_a_whiteout(target: Target) -> None:
    """Unlink merged/gone: the name MUST vanish from merged and upper/gone MUST be a 0/0 char device."""
    seen = target.observe(host.overlay_whiteout("gone"))
    target.expect("mount -t overlay", True, seen["mounted"], hint=str(seen.get("error", "")))
    target.expect("merged/gone exists", False, "gone" in seen["merged"])
    target.expect("upper/gone", {"type": "char", "rdev": [0, 0]}, seen["upper"].get("gone"),
                  hint="a whiteout is a character device with device number 0/0")


@pytest.mark.clause("HOST-OVERLAY-005")
def test_overlay_mounts_in_a_user_namespace_with_userxattr(target: Target) -> None:
    """As root of a user namespace owned by uid 65534, mounting overlay with userxattr SHOULD work."""
    seen = target.observe(host.overlay_in_userns(65534))
    target.expect_that("mount -t overlay -o userxattr in a user namespace", seen.get("mounted") is True,
                       "the mount succeeds", seen.get("child_error") or seen.get("errno") or seen)
    target.expect("merged/f after an append", {"type": "file", "content": "lower+upper"}, seen["merged"].get("f"))
