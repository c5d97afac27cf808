"""Diff: the layer from tree A to tree B, applied onto A, gives B; and it is the same layer every time."""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jail import make_scratch, remove_scratch
from trees import ROOT, Dir, File, Hard, Link, build, snapshot

from conformance.ref.diff import diff_trees, write_diff
from conformance.ref.digest import layer_digest
from conformance.ref.errors import LayerError
from conformance.ref.layers import apply_layer

NAMES = st.sampled_from(["a", "b", "c", "d"])
TIMES = st.sampled_from([1_000_000_000, 1_600_000_000])
OWNERS = st.sampled_from([(0, 0), (1000, 1000)] if ROOT else [(os.geteuid(), os.getegid())])
XATTRS = st.sampled_from([None, None, b"1", b"\xff\x00"])

FILES = st.builds(File, content=st.sampled_from([b"", b"x", b"y", b"z" * 1500]),
                  mode=st.sampled_from([0o644, 0o600, 0o755, 0o4755]), mtime=TIMES, owner=OWNERS, xattr=XATTRS)
LINKS = st.builds(Link, target=st.sampled_from(["a", "../b", "/etc/passwd", "c/d"]), mtime=TIMES, owner=OWNERS)
HARDS = st.builds(Hard, target=NAMES)


def dirs(depth: int) -> st.SearchStrategy[Dir]:
    child = st.one_of(FILES, LINKS, HARDS, dirs(depth - 1)) if depth else st.one_of(FILES, LINKS, HARDS)
    return st.builds(Dir, children=st.dictionaries(NAMES, child, max_size=4),
                     mode=st.sampled_from([0o755, 0o700, 0o1777]), mtime=TIMES, owner=OWNERS, xattr=XATTRS)


TREES = dirs(2)


def mutated(tree: Dir) -> st.SearchStrategy[Dir]:
    """B from A: each child kept, dropped, replaced, changed below, or (directories) emptied and refilled,
    so that deletions and replaced directories are common."""

    def child(node: File | Link | Hard | Dir) -> st.SearchStrategy[File | Link | Hard | Dir | None]:
        options: list[st.SearchStrategy[File | Link | Hard | Dir | None]] = [st.just(node), st.none(), FILES, LINKS,
                                                                              HARDS]
        if isinstance(node, Dir):
            options += [mutated(node), st.builds(Dir, children=st.dictionaries(st.just("e"), FILES, max_size=1),
                                                 mode=st.just(node.mode), mtime=TIMES, owner=st.just(node.owner))]
        return st.one_of(options)

    kept = st.fixed_dictionaries({name: child(node) for name, node in tree.children.items()})
    added = st.dictionaries(st.sampled_from(["e", "f"]), st.one_of(FILES, LINKS, HARDS, dirs(1)), max_size=2)
    return st.builds(lambda old, new, mode, mtime: Dir({**{k: v for k, v in old.items() if v is not None}, **new},
                                                       mode, mtime, tree.owner, tree.xattr),
                     kept, added, st.sampled_from([tree.mode, 0o700]), st.sampled_from([tree.mtime, 1_700_000_000]))


PAIRS = st.one_of(st.tuples(TREES, TREES), TREES.flatmap(lambda a: st.tuples(st.just(a), mutated(a))))


def made(scratch: Path, name: str, tree: Dir, *, reverse: bool = False) -> Path:
    path = scratch / name
    path.mkdir()
    build(path, tree, reverse=reverse)
    return path


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=PAIRS)
def test_diff_applied_onto_lower_gives_upper(pair: tuple[Dir, Dir]) -> None:
    """OCI-LAYER-005, BUILD-002: apply(A, diff(A, B)) == B for random trees of files, dirs and symlinks with
    contents, modes, owners, times and xattrs: additions, changes, deletions and replaced directories."""
    lower, upper = pair
    scratch = make_scratch()
    try:
        a, b = made(scratch, "a", lower), made(scratch, "b", upper)
        before = snapshot(a, include_root=True), snapshot(b, include_root=True)
        out = io.BytesIO()
        stats = write_diff(a, b, out)
        layer = out.getvalue()
        event(f"whiteouts: {min(stats.whiteouts, 2)}, opaque: {min(stats.opaque_whiteouts, 1)}, "
              f"hardlinks: {min(stats.hardlinks, 1)}")
        assert (snapshot(a, include_root=True), snapshot(b, include_root=True)) == before, "OCI-LAYER-008"
        c = made(scratch, "c", lower)
        apply_layer(c, layer)
        assert snapshot(c) == snapshot(b)
        assert diff_trees(c, b) == diff_trees(b, b), "nothing left to diff"
        full = made(scratch, "full", Dir())
        apply_layer(full, diff_trees(None, b))
        assert snapshot(full) == snapshot(b), "a full layer onto an empty directory gives B (OCI-MAN-003)"
    finally:
        remove_scratch(scratch)


@settings(max_examples=50, deadline=None)
@given(pair=PAIRS)
def test_same_trees_give_the_same_digest(pair: tuple[Dir, Dir]) -> None:
    """OCI-CFG-004: trees built elsewhere, in another order (other inodes, other readdir order), give
    the same bytes."""
    lower, upper = pair
    scratch = make_scratch()
    try:
        one = diff_trees(made(scratch, "a1", lower), made(scratch, "b1", upper))
        two = diff_trees(made(scratch, "a2", lower, reverse=True), made(scratch, "b2", upper, reverse=True))
        assert layer_digest(one) == layer_digest(two)
    finally:
        remove_scratch(scratch)


def members(layer: bytes) -> list[tarfile.TarInfo]:
    return list(tarfile.open(fileobj=io.BytesIO(layer)))


def names(layer: bytes) -> list[str]:
    return [m.name for m in members(layer)]


def test_deleted_directory_is_one_whiteout(scratch: Path) -> None:
    """OCI-WH-005: only the topmost deleted path gets a whiteout."""
    a = made(scratch, "a", Dir({"d": Dir({"x": File(b"x"), "sub": Dir({"y": File()})}), "keep": File()}))
    b = made(scratch, "b", Dir({"keep": File()}))
    assert names(diff_trees(a, b)) == [".wh.d"]


def test_directory_emptied_in_bulk_becomes_opaque(scratch: Path) -> None:
    """`rm -rf d && mkdir d && touch d/new`: one opaque marker is smaller than four whiteouts."""
    a = made(scratch, "a", Dir({"d": Dir({n: File(b"old") for n in "wxyz"})}))
    b = made(scratch, "b", Dir({"d": Dir({"new": File(b"new")}, mtime=1_600_000_000)}))
    assert names(diff_trees(a, b)) == ["d", "d/.wh..wh..opq", "d/new"]


def test_one_deletion_stays_an_explicit_whiteout(scratch: Path) -> None:
    """OCI-WH-009: explicit whiteouts are preferred when not larger (a tie keeps them)."""
    a = made(scratch, "a", Dir({"d": Dir({"x": File(b"x"), "y": File(b"y")})}))
    b = made(scratch, "b", Dir({"d": Dir({"y": File(b"y")}, mtime=1_600_000_000)}))
    assert names(diff_trees(a, b)) == ["d", "d/.wh.x"]


def test_the_rootfs_is_never_made_opaque(scratch: Path) -> None:
    a = made(scratch, "a", Dir({n: File(b"old") for n in "wxyz"}))
    b = made(scratch, "b", Dir({"new": File(b"new")}))
    assert names(diff_trees(a, b)) == [".wh.w", ".wh.x", ".wh.y", ".wh.z", "new"]


def test_whiteouts_come_before_siblings_and_entries_are_sorted(scratch: Path) -> None:
    """OCI-WH-006: whiteouts first in their directory; then entries in byte order, parents first."""
    a = made(scratch, "a", Dir({"z": File(), "m": Dir({"gone": File()})}))
    b = made(scratch, "b", Dir({"B": File(), "a": Dir({"x": File()}), "m": Dir(mtime=5)}))
    assert names(diff_trees(a, b)) == [".wh.z", "B", "a", "a/x", "m", "m/.wh.gone"]


def test_hardlinks_in_the_layer_are_tar_hardlinks_and_groups_are_whole(scratch: Path) -> None:
    """OCI-HL-001, OCI-HL-003: one regular entry and links to it; an unchanged partner is emitted too,
    so the layer never links to a file outside itself."""
    a = made(scratch, "a", Dir({"x": File(b"same")}))
    b = made(scratch, "b", Dir({"x": File(b"same")}))
    os.link(b / "x", b / "y")
    layer = members(diff_trees(a, b))
    assert [(m.name, m.type, m.linkname) for m in layer] == [("x", tarfile.REGTYPE, ""), ("y", tarfile.LNKTYPE, "x")]
    c = made(scratch, "c", Dir({"x": File(b"same")}))
    apply_layer(c, diff_trees(a, b))
    assert os.path.samefile(c / "x", c / "y")
    assert snapshot(c) == snapshot(b)


def test_broken_hardlink_group_is_seen_as_a_change(scratch: Path) -> None:
    a = made(scratch, "a", Dir({"x": File(b"same")}))
    os.link(a / "x", a / "y")
    b = made(scratch, "b", Dir({"x": File(b"same"), "y": File(b"same")}))
    c = made(scratch, "c", Dir({"x": File(b"same")}))
    os.link(c / "x", c / "y")
    apply_layer(c, diff_trees(a, b))
    assert not os.path.samefile(c / "x", c / "y")


@pytest.mark.skipif(not ROOT, reason="device nodes need root")
def test_device_nodes_are_kept(scratch: Path) -> None:
    b = made(scratch, "b", Dir())
    os.mknod(b / "null", 0o20666, os.makedev(1, 3))
    os.mkfifo(b / "fifo", 0o640)
    for node in ("null", "fifo"):  # whole seconds: the granularity of a tar header
        os.utime(b / node, ns=(10**18, 10**18), follow_symlinks=False)
    os.utime(b, ns=(10**18, 10**18))
    layer = members(diff_trees(None, b))
    assert [(m.name, m.type, m.devmajor, m.devminor) for m in layer] == [
        ("fifo", tarfile.FIFOTYPE, 0, 0), ("null", tarfile.CHRTYPE, 1, 3)]
    c = made(scratch, "c", Dir())
    apply_layer(c, diff_trees(None, b))
    assert snapshot(c) == snapshot(b)


def test_headers_carry_no_host_names_and_are_pax(scratch: Path) -> None:
    b = made(scratch, "b", Dir({"f": File(b"x", xattr=b"v")}))
    layer = diff_trees(None, b)
    (member,) = members(layer)
    assert (member.uname, member.gname) == ("", "")
    assert member.pax_headers == {"SCHILY.xattr.user.conformance": "v"}


def test_xattr_removed_from_a_directory_is_removed_by_apply(scratch: Path) -> None:
    a = made(scratch, "a", Dir({"d": Dir(xattr=b"old")}))
    b = made(scratch, "b", Dir({"d": Dir()}))
    c = made(scratch, "c", Dir({"d": Dir(xattr=b"old")}))
    apply_layer(c, diff_trees(a, b))
    assert os.listxattr(c / "d") == []


def test_whiteout_names_in_the_upper_tree_are_refused(scratch: Path) -> None:
    """OCI-WH-003: a `.wh.` name cannot be represented in a layer; the generator says so."""
    b = made(scratch, "b", Dir({"d": Dir({".wh.x": File()})}))
    with pytest.raises(LayerError, match=re.escape("entry 'd/.wh.x'")):
        diff_trees(None, b)


def test_write_diff_streams_and_reports(scratch: Path) -> None:
    a = made(scratch, "a", Dir({"gone": File(), "d": Dir({n: File() for n in "wxyz"})}))
    b = made(scratch, "b", Dir({"new": File(b"n"), "d": Dir(mtime=7)}))
    out = io.BytesIO()
    stats = write_diff(a, b, out)
    assert stats.digest == layer_digest(out.getvalue()) and stats.size == len(out.getvalue())
    assert (stats.entries, stats.whiteouts, stats.opaque_whiteouts, stats.hardlinks) == (4, 1, 1, 0)
