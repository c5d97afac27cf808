"""OVL-META-*: metadata-only copy-up (metacopy=on) and full copy-up on a metadata change (metacopy=off)."""

from __future__ import annotations

import pytest

from conformance.scenarios import overlay
from conformance.scenarios.overlay import op
from conformance.suite.overlay import errno_of, mounted, overlay_xattr, value_of
from conformance.target import Target

_DATA = "lower data"


@pytest.mark.clause("OVL-META-001")
@pytest.mark.requires("overlay-metacopy")
def test_metacopy_copies_metadata_only(target: Target) -> None:
    """With metacopy=on, chmod lower f: upper/f MUST hold the new mode and overlay.metacopy but none of the data."""
    seen = target.observe(overlay.run([[{"name": "f", "content": _DATA}]], [op("chmod", "f", mode=0o600),
                                                                            op("read", "f")],
                                      options={"metacopy": "on"}))
    mounted(target, seen, needs=("metacopy",))
    target.expect("chmod errno", None, errno_of(seen, 0))
    upper = seen["upper"].get("f") or {}
    target.expect("upper/f mode", 0o600, upper.get("mode"))
    target.expect_that("upper/f overlay.metacopy", overlay_xattr(upper, "metacopy") is not None,
                       "the overlay.metacopy xattr", upper.get("xattrs"))
    content = str(upper.get("content", ""))
    target.expect_that("upper/f data", _DATA not in content, "no lower data (a metadata-only copy)", content,
                       hint="the kernel leaves a sparse file of the lower size")
    target.expect("read f", _DATA, value_of(seen, 1), hint="data still comes from the lower file")


@pytest.mark.clause("OVL-META-002")
@pytest.mark.requires("overlay-metacopy")
def test_metacopy_first_write_copies_data(target: Target) -> None:
    """With metacopy=on, chmod lower f, append "+": upper/f MUST hold lower data + "+" and no overlay.metacopy."""
    seen = target.observe(overlay.run([[{"name": "f", "content": _DATA}]],
                                      [op("chmod", "f", mode=0o600), op("append", "f", content="+")],
                                      options={"metacopy": "on"}))
    mounted(target, seen, needs=("metacopy",))
    target.expect("chmod, append errnos", [None, None], [errno_of(seen, 0), errno_of(seen, 1)])
    upper = seen["upper"].get("f") or {}
    target.expect("upper/f content", _DATA + "+", upper.get("content"))
    target.expect("upper/f overlay.metacopy", None, overlay_xattr(upper, "metacopy"),
                  hint="the marker goes once the data is copied up")


@pytest.mark.clause("OVL-META-003")
def test_metacopy_off_copies_data_on_metadata_change(target: Target) -> None:
    """With metacopy=off, chmod lower f: upper/f MUST hold the lower data and no overlay.metacopy."""
    seen = target.observe(overlay.run([[{"name": "f", "content": _DATA}]], [op("chmod", "f", mode=0o600)],
                                      options={"metacopy": "off"}))
    mounted(target, seen, needs=("metacopy",))
    upper = seen["upper"].get("f") or {}
    target.expect("upper/f content", _DATA, upper.get("content"))
    target.expect("upper/f overlay.metacopy", None, overlay_xattr(upper, "metacopy"))
