"""OVL-WHITEOUT-*, OVL-RMDIR-*: how a removal is recorded in the upper dir and how a whiteout hides a name."""

from __future__ import annotations

import pytest

from conformance.scenarios import overlay
from conformance.scenarios.overlay import Entry, op, whiteout
from conformance.suite.overlay import WHITEOUT, errno_of, mounted, names_under, pick, value_of
from conformance.target import Target

_LOWER_AB = [{"name": "a", "content": "lower a"}, {"name": "b", "content": "lower b"}]


@pytest.mark.clause("OVL-WHITEOUT-001")
def test_whiteout_hides_lower_name(target: Target) -> None:
    """Lower has a and b; upper has a whiteout a: stat a MUST be ENOENT and readdir MUST list only b."""
    seen = target.observe(overlay.run([_LOWER_AB], [op("stat", "a"), op("read", "a"), op("readdir", "")],
                                      upper=[whiteout("a")]))
    mounted(target, seen)
    target.expect("stat a errno", "ENOENT", errno_of(seen, 0), hint="whiteout in upper over lower a")
    target.expect("read a errno", "ENOENT", errno_of(seen, 1))
    target.expect("readdir /", ["b"], value_of(seen, 2))


@pytest.mark.clause("OVL-WHITEOUT-002")
def test_whiteout_is_never_visible(target: Target) -> None:
    """Upper has a whiteout over lower a and a stray whiteout with nothing below: neither MUST show in merged."""
    seen = target.observe(overlay.run([_LOWER_AB], [op("readdir", ""), op("stat", "stray")],
                                      upper=[whiteout("a"), whiteout("stray")]))
    mounted(target, seen)
    target.expect("readdir /", ["b"], value_of(seen, 0), hint="the whiteout itself is hidden")
    target.expect("stat stray errno", "ENOENT", errno_of(seen, 1))
    target.expect("merged names", ["b"], names_under(seen["merged"]))


@pytest.mark.clause("OVL-WHITEOUT-003")
def test_whiteout_of_directory_hides_subtree(target: Target) -> None:
    """Lower has d/sub/x and d/y; upper has a whiteout d: d, d/y and d/sub/x MUST all be ENOENT."""
    lower = [{"name": "d", "type": "dir"}, {"name": "d/sub", "type": "dir"}, {"name": "d/sub/x", "content": "x"},
             {"name": "d/y", "content": "y"}, {"name": "keep", "content": "k"}]
    seen = target.observe(overlay.run([lower], [op("stat", "d"), op("stat", "d/y"), op("stat", "d/sub/x")],
                                      upper=[whiteout("d")]))
    mounted(target, seen)
    target.expect("stat d, d/y, d/sub/x errnos", ["ENOENT"] * 3, [errno_of(seen, i) for i in range(3)])
    target.expect("merged names", ["keep"], names_under(seen["merged"]))


@pytest.mark.clause("OVL-WHITEOUT-004")
def test_whiteout_in_lower_layer_hides_layers_below(target: Target) -> None:
    """Bottom lower has a and b; the lower above it whites out a: a MUST be absent from the merged view."""
    seen = target.observe(overlay.run([[whiteout("a"), {"name": "c", "content": "c"}], _LOWER_AB],
                                      [op("stat", "a"), op("readdir", "")]))
    mounted(target, seen)
    target.expect("stat a errno", "ENOENT", errno_of(seen, 0), hint="whiteout in the middle layer")
    target.expect("readdir /", ["b", "c"], value_of(seen, 1))


@pytest.mark.clause("OVL-WHITEOUT-005")
def test_unlinking_lower_non_directories_leaves_whiteouts(target: Target) -> None:
    """Lower has file f, hard link h of f, symlink s and fifo p; unlink each: upper MUST hold a 0/0 whiteout of each."""
    lower = [{"name": "f", "content": "f"}, {"name": "h", "type": "hardlink", "target": "f"},
             {"name": "s", "type": "symlink", "target": "f"}, {"name": "p", "type": "fifo"},
             {"name": "keep", "content": "k"}]
    names = ["f", "h", "s", "p"]
    seen = target.observe(overlay.run([lower], [op("unlink", name) for name in names]))
    mounted(target, seen)
    target.expect("unlink errnos", [None] * 4, [errno_of(seen, i) for i in range(4)])
    target.expect("merged names", ["keep"], names_under(seen["merged"]))
    for name in names:
        target.expect(f"upper/{name}", WHITEOUT, pick(seen["upper"].get(name), "type", "rdev"),
                      hint="a whiteout is a character device 0/0 (overlayfs.rst)")


@pytest.mark.clause("OVL-WHITEOUT-006")
def test_unlinking_pure_upper_file_leaves_nothing(target: Target) -> None:
    """Upper alone has f (lower has other): unlink f MUST remove it from merged and upper, with no whiteout."""
    seen = target.observe(overlay.run([[{"name": "other", "content": "o"}]], [op("unlink", "f")],
                                      upper=[{"name": "f", "content": "upper only"}]))
    mounted(target, seen)
    target.expect("unlink f errno", None, errno_of(seen, 0))
    target.expect("merged names", ["other"], names_under(seen["merged"]))
    target.expect("upper/f", None, seen["upper"].get("f"), hint="nothing below f needs hiding")


@pytest.mark.clause("OVL-WHITEOUT-007")
def test_unlinking_copied_up_file_leaves_whiteout(target: Target) -> None:
    """Lower has a; append to a (copy-up), then unlink a: a MUST stay gone and upper/a MUST be a whiteout."""
    seen = target.observe(overlay.run([_LOWER_AB], [op("append", "a", content="+"), op("unlink", "a"),
                                                    op("stat", "a")]))
    mounted(target, seen)
    target.expect("append, unlink errnos", [None, None], [errno_of(seen, 0), errno_of(seen, 1)])
    target.expect("stat a errno", "ENOENT", errno_of(seen, 2), hint="the lower a must not reappear")
    target.expect("upper/a", WHITEOUT, pick(seen["upper"].get("a"), "type", "rdev"))


@pytest.mark.clause("OVL-WHITEOUT-008")
def test_name_under_whiteout_is_absent_for_every_operation(target: Target) -> None:
    """Upper whiteout over lower a: read, write, truncate, chmod, unlink, rename and link of a MUST be ENOENT."""
    ops = [op("read", "a"), op("write", "a", content="x"), op("truncate", "a", size=0), op("chmod", "a", mode=0o600),
           op("unlink", "a"), op("rename", "a", to="c"), op("link", "a", to="d")]
    seen = target.observe(overlay.run([_LOWER_AB], ops, upper=[whiteout("a")]))
    mounted(target, seen)
    kinds = [o["op"] for o in ops]
    target.expect(f"errnos of {', '.join(kinds)} on a", ["ENOENT"] * len(ops),
                  [errno_of(seen, i) for i in range(len(ops))])
    target.expect("upper/a", WHITEOUT, pick(seen["upper"].get("a"), "type", "rdev"))
    target.expect("merged names", ["b"], names_under(seen["merged"]))


@pytest.mark.clause("OVL-WHITEOUT-009")
def test_creating_over_whiteout_replaces_it(target: Target) -> None:
    """Lower has file f, s and p; unlink each, then create file f (0600), symlink s and fifo p: upper MUST hold them."""
    lower: list[Entry] = [{"name": "f", "content": "lower f", "mode": 0o644}, {"name": "s", "content": "lower s"},
             {"name": "p", "content": "lower p"}]
    ops = [op("unlink", "f"), op("unlink", "s"), op("unlink", "p"),
           op("create", "f", content="new", mode=0o600), op("symlink", "s", target="f"),
           {"op": "mknod", "path": "p", "kind": "fifo"}]
    seen = target.observe(overlay.run([lower], ops))
    mounted(target, seen)
    target.expect("errnos", [None] * len(ops), [errno_of(seen, i) for i in range(len(ops))])
    target.expect("upper/f", {"type": "file", "content": "new", "mode": 0o600},
                  pick(seen["upper"].get("f"), "type", "content", "mode"))
    target.expect("upper/s", {"type": "symlink", "target": "f"}, pick(seen["upper"].get("s"), "type", "target"))
    target.expect("upper/p type", "fifo", (seen["upper"].get("p") or {}).get("type"))
    target.expect("merged/f", {"type": "file", "content": "new"}, pick(seen["merged"].get("f"), "type", "content"))


@pytest.mark.clause("OVL-RMDIR-001")
def test_rmdir_with_lower_children_is_enotempty(target: Target) -> None:
    """Lower d/a (upper d empty, merged) and lower e/b: rmdir d and rmdir e MUST be ENOTEMPTY, changing nothing."""
    lower = [{"name": "d", "type": "dir"}, {"name": "d/a", "content": "a"},
             {"name": "e", "type": "dir"}, {"name": "e/b", "content": "b"}]
    seen = target.observe(overlay.run([lower], [op("rmdir", "d"), op("rmdir", "e")],
                                      upper=[{"name": "d", "type": "dir"}]))
    mounted(target, seen)
    target.expect("rmdir d, rmdir e errnos", ["ENOTEMPTY", "ENOTEMPTY"], [errno_of(seen, 0), errno_of(seen, 1)])
    target.expect("merged names", ["d", "d/a", "e", "e/b"], names_under(seen["merged"]))
    target.expect("upper names", ["d"], names_under(seen["upper"]))


@pytest.mark.clause("OVL-RMDIR-002")
def test_rmdir_of_emptied_lower_directory_leaves_whiteout(target: Target) -> None:
    """Lower d/a and d/b: unlink both, rmdir d: it MUST work, d MUST be gone and upper/d MUST be a whiteout."""
    lower = [{"name": "d", "type": "dir"}, {"name": "d/a", "content": "a"}, {"name": "d/b", "content": "b"},
             {"name": "keep", "content": "k"}]
    seen = target.observe(overlay.run([lower], [op("unlink", "d/a"), op("unlink", "d/b"), op("rmdir", "d"),
                                                op("stat", "d")]))
    mounted(target, seen)
    target.expect("unlink, unlink, rmdir errnos", [None] * 3, [errno_of(seen, i) for i in range(3)])
    target.expect("stat d errno", "ENOENT", errno_of(seen, 3))
    target.expect("upper/d", WHITEOUT, pick(seen["upper"].get("d"), "type", "rdev"))
    target.expect("upper names", ["d"], names_under(seen["upper"]), hint="the upper copy of d goes with its whiteouts")
