"""OVL-OPAQUE-*: opaque directories hide the lower directories of their name, and who marks them."""

from __future__ import annotations

import pytest

from conformance.scenarios import overlay
from conformance.scenarios.overlay import op, opaque_dir
from conformance.suite.overlay import errno_of, mounted, overlay_xattr, value_of
from conformance.target import Target


@pytest.mark.clause("OVL-OPAQUE-001")
def test_opaque_upper_directory_hides_lower_children(target: Target) -> None:
    """Lower d/a and d/sub/x; upper d opaque with d/mine: readdir d MUST be mine and d/a, d/sub/x MUST be ENOENT."""
    lower = [{"name": "d", "type": "dir"}, {"name": "d/a", "content": "a"}, {"name": "d/sub", "type": "dir"},
             {"name": "d/sub/x", "content": "x"}]
    upper = [opaque_dir("d"), {"name": "d/mine", "content": "mine"}]
    seen = target.observe(overlay.run([lower], [op("readdir", "d"), op("stat", "d/a"), op("stat", "d/sub/x")],
                                      upper=upper))
    mounted(target, seen)
    target.expect("readdir d", ["mine"], value_of(seen, 0), hint="upper d has overlay.opaque=y")
    target.expect("stat d/a, d/sub/x errnos", ["ENOENT", "ENOENT"], [errno_of(seen, 1), errno_of(seen, 2)])


@pytest.mark.clause("OVL-OPAQUE-002")
def test_opaque_directory_in_lower_layer_stops_the_merge(target: Target) -> None:
    """Bottom d/bottom, middle d opaque with d/mid, upper d/top: readdir d MUST be mid, top."""
    bottom = [{"name": "d", "type": "dir"}, {"name": "d/bottom", "content": "b"}]
    middle = [opaque_dir("d"), {"name": "d/mid", "content": "m"}]
    upper = [{"name": "d", "type": "dir"}, {"name": "d/top", "content": "t"}]
    seen = target.observe(overlay.run([middle, bottom], [op("readdir", "d"), op("stat", "d/bottom")], upper=upper))
    mounted(target, seen)
    target.expect("readdir d", ["mid", "top"], value_of(seen, 0), hint="the middle layer's d is opaque")
    target.expect("stat d/bottom errno", "ENOENT", errno_of(seen, 1))


@pytest.mark.clause("OVL-OPAQUE-003")
def test_mkdir_over_removed_lower_directory_is_opaque(target: Target) -> None:
    """Lower d/a: unlink d/a, rmdir d, mkdir d: readdir d MUST be empty and upper/d MUST carry overlay.opaque=y."""
    lower = [{"name": "d", "type": "dir"}, {"name": "d/a", "content": "a"}]
    ops = [op("unlink", "d/a"), op("rmdir", "d"), op("mkdir", "d", mode=0o755), op("readdir", "d"), op("stat", "d/a")]
    seen = target.observe(overlay.run([lower], ops))
    mounted(target, seen)
    target.expect("unlink, rmdir, mkdir errnos", [None] * 3, [errno_of(seen, i) for i in range(3)])
    target.expect("readdir d", [], value_of(seen, 3))
    target.expect("stat d/a errno", "ENOENT", errno_of(seen, 4))
    target.expect("upper/d type", "dir", (seen["upper"].get("d") or {}).get("type"))
    target.expect("upper/d overlay.opaque", "y", overlay_xattr(seen["upper"].get("d"), "opaque"),
                  hint="a directory made over a whiteout is marked opaque")


@pytest.mark.clause("OVL-OPAQUE-004")
def test_copy_up_does_not_copy_opaqueness(target: Target) -> None:
    """Middle d opaque (bottom d/b below): creating d/new copies d up; upper/d SHOULD NOT carry overlay.opaque."""
    bottom = [{"name": "d", "type": "dir"}, {"name": "d/b", "content": "b"}]
    middle = [opaque_dir("d"), {"name": "d/m", "content": "m"}]
    seen = target.observe(overlay.run([middle, bottom], [op("create", "d/new", content="n"), op("readdir", "d")]))
    mounted(target, seen)
    target.expect("create d/new errno", None, errno_of(seen, 0))
    target.expect("readdir d", ["m", "new"], value_of(seen, 1))
    target.expect("upper/d overlay.opaque", None, overlay_xattr(seen["upper"].get("d"), "opaque"),
                  hint="opaqueness belongs to the middle layer (xfstests overlay/014)")
