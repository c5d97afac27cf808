"""OVL-DATA-*: data-only lower layers (lowerdir=lower::data), which hold the data of metacopy files only."""

from __future__ import annotations

import pytest

from conformance.scenarios import overlay
from conformance.scenarios.overlay import metacopy_file, op
from conformance.suite.overlay import errno_of, mounted, value_of
from conformance.target import Target

_BLOB = "the data lives below\n"
#: A data-only layer as composefs lays one out: blobs by digest, plus a name the lower layer also uses.
_DATA = [{"name": "blobs/ab12", "content": _BLOB}, {"name": "only-data", "content": "hidden"},
         {"name": "f", "content": "data layer f"}]
#: metacopy=on: before 6.16 a data-only layer needs it (params.c: "lower data-only dirs require metacopy").
_OPTIONS = {"metacopy": "on"}


@pytest.mark.clause("OVL-DATA-001")
@pytest.mark.requires("overlay-data-only", "overlay-metacopy")
def test_data_only_layer_is_never_merged(target: Target) -> None:
    """lowerdir=l::data with data blobs/ab12, only-data and f: merged MUST show only l's entries."""
    lower = [{"name": "f", "content": "lower f"}, {"name": "d", "type": "dir"}]
    ops = [op("readdir", ""), op("stat", "only-data"), op("stat", "blobs"), op("read", "f")]
    seen = target.observe(overlay.run([lower], ops, options=_OPTIONS, data_lowers=[_DATA]))
    mounted(target, seen, needs=("metacopy",))
    target.expect("readdir /", ["d", "f"], value_of(seen, 0), hint="a data-only layer is not merged")
    target.expect("stat only-data, stat blobs", ["ENOENT", "ENOENT"], [errno_of(seen, 1), errno_of(seen, 2)])
    target.expect("read f", "lower f", value_of(seen, 3))
    target.expect("merged names", ["d", "f"], sorted(seen["merged"]))


@pytest.mark.clause("OVL-DATA-002")
@pytest.mark.requires("overlay-data-only", "overlay-metacopy")
def test_metacopy_file_reads_through_redirect_into_data_layer(target: Target) -> None:
    """Lower m (metacopy, 0640, redirect /blobs/ab12): read m MUST give the blob; append MUST copy it up."""
    lower = [metacopy_file("m", len(_BLOB), "blobs/ab12", mode=0o640),
             metacopy_file("n", len(_BLOB), "blobs/ab12")]
    ops = [op("read", "m"), op("stat", "m"), op("append", "n", content="+")]
    seen = target.observe(overlay.run([lower], ops, options=_OPTIONS, data_lowers=[_DATA]))
    mounted(target, seen, needs=("metacopy",))
    target.expect("read m", _BLOB, value_of(seen, 0), hint="the data is the redirect's file in the data-only layer")
    stat = value_of(seen, 1) or {}
    target.expect("stat m (mode, size)", {"mode": 0o640, "size": len(_BLOB)},
                  {"mode": stat.get("mode"), "size": stat.get("size")}, hint="metadata from the metacopy file")
    target.expect("append n errno", None, errno_of(seen, 2))
    target.expect("upper/n content", _BLOB + "+", (seen["upper"].get("n") or {}).get("content"),
                  hint="a write copies the data from the data-only layer up")


@pytest.mark.clause("OVL-DATA-003")
@pytest.mark.requires("overlay-data-only")
def test_data_only_layer_alone_is_refused(target: Target) -> None:
    """lowerdir=::data (no regular lower layer above the data-only one): the mount MUST fail with EINVAL."""
    seen = target.observe(overlay.run([], [op("readdir", "")], options=_OPTIONS, data_lowers=[_DATA]))
    target.expect("mount error", "EINVAL", seen.get("mount_error"),
                  hint="the top lower layer cannot be a data-only one")
