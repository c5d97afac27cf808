"""OVL-LOOKUP-*, OVL-READDIR-*: which layer's object a name shows, and what readdir of a merged directory lists."""

from __future__ import annotations

import pytest

from conformance.scenarios import overlay
from conformance.scenarios.overlay import Entry, op, opaque_dir, whiteout
from conformance.suite.overlay import errno_of, mounted, pick, value_of
from conformance.target import Target


@pytest.mark.clause("OVL-LOOKUP-001")
def test_upper_file_hides_lower_file(target: Target) -> None:
    """Lower and upper both hold file a; read a MUST give the upper content."""
    seen = target.observe(overlay.run([[{"name": "a", "type": "file", "content": "lower"}]],
                                      [op("read", "a")], upper=[{"name": "a", "type": "file", "content": "upper"}]))
    mounted(target, seen)
    target.expect("read a", (None, "upper"), (errno_of(seen, 0), value_of(seen, 0)),
                  hint="the upper object is the one visible (overlayfs.rst § Upper and Lower)")
    target.expect("merged/a content", "upper", seen["merged"].get("a", {}).get("content"))


@pytest.mark.clause("OVL-LOOKUP-002")
def test_non_directory_on_either_side_hides_the_other_side(target: Target) -> None:
    """Lower dir x (with x/child) and file y; upper file x and dir y (with y/mine): merged MUST show upper's only."""
    lower = [{"name": "x", "type": "dir"}, {"name": "x/child", "type": "file", "content": "lower child"},
             {"name": "y", "type": "file", "content": "lower y"}]
    upper = [{"name": "x", "type": "file", "content": "upper x"}, {"name": "y", "type": "dir"},
             {"name": "y/mine", "type": "file", "content": "upper mine"}]
    seen = target.observe(overlay.run([lower], [op("stat", "x/child"), op("readdir", "y")], upper=upper))
    mounted(target, seen)
    target.expect("merged/x", {"type": "file", "content": "upper x"}, pick(seen["merged"].get("x"), "type", "content"))
    target.expect("stat x/child errno", "ENOTDIR", errno_of(seen, 0), hint="x is the upper file: nothing is below it")
    target.expect("readdir y", ["mine"], value_of(seen, 1), hint="an upper dir does not merge with a lower file")


@pytest.mark.clause("OVL-LOOKUP-003")
def test_two_directories_of_one_name_merge(target: Target) -> None:
    """Lower d/a and d/both, upper d/b and d/both: readdir d MUST be a, b, both and d/both MUST read as upper's."""
    lower = [{"name": "d", "type": "dir"}, {"name": "d/a", "content": "lower a"},
             {"name": "d/both", "content": "lower both"}]
    upper = [{"name": "d", "type": "dir"}, {"name": "d/b", "content": "upper b"},
             {"name": "d/both", "content": "upper both"}]
    seen = target.observe(overlay.run([lower], [op("readdir", "d"), op("read", "d/both"), op("read", "d/a")],
                                      upper=upper))
    mounted(target, seen)
    target.expect("readdir d", ["a", "b", "both"], value_of(seen, 0))
    target.expect("read d/both", "upper both", value_of(seen, 1), hint="within a merged dir the upper name wins")
    target.expect("read d/a", "lower a", value_of(seen, 2))


@pytest.mark.clause("OVL-LOOKUP-004")
def test_merged_directory_shows_upper_attributes(target: Target) -> None:
    """Lower d is 0700 uid 1 mtime 1.2e9; upper d is 0755 uid 0: merged d MUST show 0755, uid 0 and upper's mtime."""
    lower: list[Entry] = [{"name": "d", "type": "dir", "mode": 0o700, "uid": 1, "gid": 1, "mtime": 1_200_000_000},
                          {"name": "d/a", "content": "a"}]
    upper = [{"name": "d", "type": "dir", "mode": 0o755, "uid": 0, "gid": 0, "mtime": 1_300_000_000}]
    seen = target.observe(overlay.run([lower], [], upper=upper))
    mounted(target, seen)
    target.expect("merged/d (mode, uid, gid, mtime)",
                  {"mode": 0o755, "uid": 0, "gid": 0, "mtime": 1_300_000_000},
                  pick(seen["merged"].get("d"), "mode", "uid", "gid", "mtime"),
                  hint="metadata of a merged dir comes from the upper dir only (overlayfs.rst § Directories)")


@pytest.mark.clause("OVL-LOOKUP-005")
def test_first_lowerdir_is_the_top_layer(target: Target) -> None:
    """Three lowers hold f (l0, l1, l2) and two hold g (l1, l2): f MUST read l0 and g MUST read l1."""
    lowers = [[{"name": "f", "content": "l0"}],
              [{"name": "f", "content": "l1"}, {"name": "g", "content": "l1"}],
              [{"name": "f", "content": "l2"}, {"name": "g", "content": "l2"}]]
    seen = target.observe(overlay.run(lowers, [op("read", "f"), op("read", "g")]))
    mounted(target, seen)
    target.expect("read f", "l0", value_of(seen, 0), hint="lowerdir=l0:l1:l2 stacks l0 on top")
    target.expect("read g", "l1", value_of(seen, 1))


@pytest.mark.clause("OVL-READDIR-001")
def test_readdir_lists_each_name_once(target: Target) -> None:
    """Upper and two lowers all hold file f and dir d (each with d/x): readdir / and d MUST list each name once."""
    layer: list[Entry] = [{"name": "f", "content": "f"}, {"name": "d", "type": "dir"}, {"name": "d/x", "content": "x"}]
    seen = target.observe(overlay.run([layer, layer], [op("readdir", ""), op("readdir", "d")], upper=layer))
    mounted(target, seen)
    target.expect("readdir /", ["d", "f"], value_of(seen, 0), hint="names already listed are not re-added")
    target.expect("readdir d", ["x"], value_of(seen, 1))


@pytest.mark.clause("OVL-READDIR-002")
def test_readdir_lists_exactly_what_lookup_finds(target: Target) -> None:
    """Whiteouts in upper and a middle lower, an opaque dir: a name MUST be listed iff its stat succeeds."""
    bottom = [{"name": "a", "content": "a"}, {"name": "b", "content": "b"}, {"name": "c", "content": "c"},
              {"name": "d", "type": "dir"}, {"name": "d/old", "content": "old"}]
    middle = [whiteout("b"), opaque_dir("d"), {"name": "d/new", "content": "new"}, {"name": "e", "content": "e"}]
    upper = [whiteout("c"), whiteout("e"), whiteout("stray")]
    candidates = ["a", "b", "c", "d", "e", "stray", "d/old", "d/new"]
    ops = [op("readdir", ""), op("readdir", "d"), *(op("stat", name) for name in candidates)]
    seen = target.observe(overlay.run([middle, bottom], ops, upper=upper))
    mounted(target, seen)
    listed = {name for name in value_of(seen, 0) or []} | {f"d/{name}" for name in value_of(seen, 1) or []}
    found = {name for i, name in enumerate(candidates) if errno_of(seen, 2 + i) is None}
    target.expect("names readdir lists (expected: the names stat finds)", sorted(found), sorted(listed),
                  hint="readdir and lookup must agree on whiteouts and opaque dirs")
    target.expect("names found by stat", ["a", "d", "d/new"], sorted(found))


@pytest.mark.clause("OVL-READDIR-003")
def test_new_readdir_sees_earlier_changes(target: Target) -> None:
    """Lower d/a and d/b: readdir, create d/c, unlink d/a, readdir again: the second MUST be b, c."""
    lower = [{"name": "d", "type": "dir"}, {"name": "d/a", "content": "a"}, {"name": "d/b", "content": "b"}]
    ops = [op("readdir", "d"), op("create", "d/c", content="c"), op("unlink", "d/a"), op("readdir", "d")]
    seen = target.observe(overlay.run([lower], ops))
    mounted(target, seen)
    target.expect("first readdir d", ["a", "b"], value_of(seen, 0))
    target.expect("create d/c, unlink d/a", [None, None], [errno_of(seen, 1), errno_of(seen, 2)])
    target.expect("second readdir d", ["b", "c"], value_of(seen, 3),
                  hint="the merged list is cached per open directory, not across opens (overlayfs.rst § readdir)")
