"""OVL-NONSTD-*: what overlayfs.rst lists under "Non-standard behavior", at the level the doc gives."""

from __future__ import annotations

import pytest

from conformance.scenarios import overlay
from conformance.scenarios.overlay import op
from conformance.suite.overlay import errno_of, mounted, names_under, value_of
from conformance.target import Target


@pytest.mark.clause("OVL-NONSTD-001")
def test_merged_directory_rename_without_redirect_is_exdev(target: Target) -> None:
    """With redirect_dir=off, lower d/a and upper d/b: rename d e MUST be EXDEV and readdir d MUST still be a, b."""
    seen = target.observe(overlay.run([[{"name": "d", "type": "dir"}, {"name": "d/a", "content": "a"}]],
                                      [op("rename", "d", to="e"), op("readdir", "d")],
                                      upper=[{"name": "d", "type": "dir"}, {"name": "d/b", "content": "b"}],
                                      options={"redirect_dir": "off"}))
    mounted(target, seen)
    target.expect("rename d e errno", "EXDEV", errno_of(seen, 0), hint="redirect_dir=off: no redirects are made")
    target.expect("readdir d", ["a", "b"], value_of(seen, 1))
    target.expect("upper names", ["d", "d/b"], names_under(seen["upper"]))


@pytest.mark.clause("OVL-NONSTD-002")
def test_copy_up_without_index_breaks_hard_links(target: Target) -> None:
    """index=off, lower a with hard link b; append "+" to a: b MAY keep the lower data (the link broken)."""
    lower = [{"name": "a", "content": "data"}, {"name": "b", "type": "hardlink", "target": "a"}]
    seen = target.observe(overlay.run([lower], [op("append", "a", content="+"), op("read", "a"), op("read", "b")],
                                      options={"index": "off"}))
    mounted(target, seen)
    target.expect("append errno", None, errno_of(seen, 0))
    target.expect("read a", "data+", value_of(seen, 1))
    target.expect("read b", "data", value_of(seen, 2), hint="without index copy-up breaks the link (overlayfs.rst)")
    target.expect("upper names", ["a"], names_under(seen["upper"]))
