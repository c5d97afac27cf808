"""OVL-LINK-*: hard links and symlinks made through the merged view, and lower hard links kept by index=on."""

from __future__ import annotations

import pytest

from conformance.scenarios import overlay
from conformance.scenarios.overlay import op
from conformance.suite.overlay import errno_of, mounted, names_under, pick, value_of
from conformance.target import Target


@pytest.mark.clause("OVL-LINK-001")
def test_hard_link_to_lower_file_links_the_copy(target: Target) -> None:
    """Lower a; link a b: upper a and b MUST both be files holding a's data with 2 links, as merged a and b."""
    seen = target.observe(overlay.run([[{"name": "a", "content": "data"}]], [op("link", "a", to="b")]))
    mounted(target, seen)
    target.expect("link errno", None, errno_of(seen, 0))
    for tree in ("upper", "merged"):
        for name in ("a", "b"):
            target.expect(f"{tree}/{name}", {"type": "file", "content": "data", "nlink": 2},
                          pick(seen[tree].get(name), "type", "content", "nlink"),
                          hint="creating a hard link requires copy-up (overlayfs.rst § Non-directories)")


@pytest.mark.clause("OVL-LINK-002")
def test_symlink_creation_copies_nothing_up(target: Target) -> None:
    """Lower d/a; symlink d/s -> a, readlink and read through it: upper MUST hold only d and d/s."""
    lower = [{"name": "d", "type": "dir"}, {"name": "d/a", "content": "lower a"}]
    seen = target.observe(overlay.run([lower], [op("symlink", "d/s", target="a"), op("readlink", "d/s"),
                                                op("read", "d/s")]))
    mounted(target, seen)
    target.expect("symlink, readlink, read", [(None, None), (None, "a"), (None, "lower a")],
                  [(errno_of(seen, i), value_of(seen, i)) for i in range(3)])
    target.expect("upper names", ["d", "d/s"], names_under(seen["upper"]), hint="only the new symlink's parent")
    target.expect("upper/d/s", {"type": "symlink", "target": "a"}, pick(seen["upper"].get("d/s"), "type", "target"))


@pytest.mark.clause("OVL-LINK-003")
@pytest.mark.requires("overlay-index")
def test_index_on_keeps_lower_hard_links(target: Target) -> None:
    """index=on, lower a with hard link b; append "+" to a: read b MUST give the new data, with 2 links."""
    lower = [{"name": "a", "content": "data"}, {"name": "b", "type": "hardlink", "target": "a"}]
    seen = target.observe(overlay.run([lower], [op("append", "a", content="+"), op("read", "b"), op("stat", "b")],
                                      options={"index": "on"}))
    mounted(target, seen, needs=("index",))
    target.expect("append errno", None, errno_of(seen, 0))
    target.expect("read b", "data+", value_of(seen, 1), hint="index=on keeps the link across copy-up")
    target.expect("stat b nlink", 2, (value_of(seen, 2) or {}).get("nlink"))
