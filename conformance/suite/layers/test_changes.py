"""LAYER-DIR/REPLACE/DEV/ATTR: what a layer's entry does to the lower entry of its name, and to itself."""

from __future__ import annotations

import pytest

from conformance.scenarios import layers
from conformance.scenarios.layers import device, directory, file, hardlink, symlink
from conformance.target import Target


@pytest.mark.clause("LAYER-DIR-001")
def test_directory_over_directory_takes_the_new_attributes_and_keeps_children(target: Target) -> None:
    """Lower d is 0700 root with d/x; upper d is 0755 5:6 at another time: d MUST be 0755 5:6, d/x MUST stay."""
    lower = [directory("d", mode=0o700, mtime=1_000_000_000), file("d/x", "lower")]
    upper = [directory("d", mode=0o755, uid=5, gid=6, mtime=1_200_000_000)]
    seen = target.observe(layers.apply(lower, upper, detail=True))
    target.expect("apply error", None, seen.get("error"))
    got = seen["tree"].get("d") or {}
    target.expect("d (mode, uid, gid, mtime)", ["0o755", 5, 6, 1_200_000_000],
                  [oct(got.get("mode", 0)), got.get("uid"), got.get("gid"), got.get("mtime")])
    target.expect("d/x", "lower", (seen["tree"].get("d/x") or {}).get("content"))


@pytest.mark.clause("LAYER-REPLACE-001")
def test_other_collisions_unlink_then_create(target: Target) -> None:
    """A file over a hardlinked file, a file over a directory, a file over a symlink out: MUST be unlink+create."""
    lower = [file("a", "old"), hardlink("b", "a"), directory("d"), file("d/child", "x"),
             symlink("s", "{sentinel}/keep")]
    upper = [file("a", "new"), file("d", "now a file"), file("s", "now a file")]
    seen = target.observe(layers.apply(lower, upper))
    target.expect("apply error", None, seen.get("error"))
    tree = seen["tree"]
    contents = {name: (tree.get(name) or {}).get("content") for name in ("a", "b", "d", "s")}
    target.expect("contents", {"a": "new", "b": "old", "d": "now a file", "s": "now a file"}, contents,
                  hint="the hardlinked partner keeps the old inode")
    target.expect("names under d", [], [name for name in tree if name.startswith("d/")])
    target.expect("sentinel changed", False, seen["sentinel_changed"], hint="s was replaced, not written through")


@pytest.mark.clause("LAYER-DEV-001")
def test_devices_and_fifos_are_created(target: Target) -> None:
    """A char device 1:3, a block device 7:0 and a fifo MUST be applied as those nodes, with their modes."""
    entries = [directory("dev"), device("dev/null", "chardev", 1, 3, mode=0o666),
               device("dev/loop0", "blockdev", 7, 0, mode=0o660), device("run.fifo", "fifo", mode=0o600)]
    seen = target.observe(layers.apply(entries))
    target.expect("apply error", None, seen.get("error"))
    for entry in entries[1:]:
        got = seen["tree"].get(entry["name"]) or {}
        expected = [entry["type"], oct(entry["mode"])] + ([entry["rdev"]] if entry["type"] != "fifo" else [])
        actual = [got.get("type"), oct(got.get("mode", 0))] + ([got.get("rdev")] if entry["type"] != "fifo" else [])
        target.expect(f"rootfs/{entry['name']}", expected, actual)


@pytest.mark.clause("LAYER-ATTR-002")
def test_modification_times_are_kept(target: Target) -> None:
    """A directory, a file and a symlink with three different mtimes MUST be applied with those mtimes."""
    entries = [directory("d", mtime=1_111_111_111), file("d/f", "x", mtime=1_222_222_222),
               symlink("link", "d/f") | {"mtime": 1_333_333_333}]
    seen = target.observe(layers.apply(entries, detail=True))
    target.expect("apply error", None, seen.get("error"))
    for entry in entries:
        got = seen["tree"].get(entry["name"]) or {}
        target.expect(f"rootfs/{entry['name']} mtime", entry["mtime"], got.get("mtime"))


@pytest.mark.clause("LAYER-ATTR-003")
def test_extended_attributes_are_kept(target: Target) -> None:
    """A file and a directory carrying user.* xattrs in PAX records MUST be applied with those xattrs."""
    entries = [directory("d", xattrs={"user.role": "dir"}),
               file("d/f", "x", xattrs={"user.role": "file", "user.other": "2"})]
    seen = target.observe(layers.apply(entries, detail=True))
    target.expect("apply error", None, seen.get("error"))
    for entry in entries:
        target.expect(f"rootfs/{entry['name']} xattrs", entry["xattrs"],
                      (seen["tree"].get(entry["name"]) or {}).get("xattrs"))
