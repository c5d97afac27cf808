"""LAYER-STORE-*: layers kept as overlay lower directories, as engines keep them."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.scenarios import layers
from conformance.scenarios.layers import directory, file, opaque, whiteout
from conformance.target import Target


def _shape(entry: dict[str, Any]) -> Any:
    """What the clause is about: the type, a device's numbers, a directory's opaque mark, a file's content."""
    kind = entry.get("type")
    if kind == "chardev":
        return ["chardev", *entry["rdev"]]
    if kind == "dir":
        return ["dir", entry.get("opaque")]
    return [kind, entry.get("content")]


@pytest.mark.clause("LAYER-STORE-001")
def test_stored_layers_hold_their_own_changes_in_overlay_form(target: Target) -> None:
    """Base a, b, d/x; top .wh.a, d/ opaque, d/new: the top's dir MUST hold a as 0/0, d opaque y, d/new."""
    base = [file("a", "base a"), file("b", "base b"), directory("d"), file("d/x", "base x")]
    top = [whiteout("a"), directory("d"), opaque("d"), file("d/new", "top new")]
    seen = target.observe(layers.stored(base, top))
    target.expect("store error", None, seen.get("error"))
    stored = [{name: _shape(entry) for name, entry in tree.items()} for tree in seen["layers"]]
    target.expect("number of layer directories", 2, len(stored))
    target.expect("base layer directory", {"a": ["file", "base a"], "b": ["file", "base b"], "d": ["dir", None],
                                           "d/x": ["file", "base x"]}, stored[0])
    target.expect("top layer directory", {"a": ["chardev", 0, 0], "d": ["dir", "y"], "d/new": ["file", "top new"]},
                  stored[1], hint=f"directories: {seen.get('dirs')}")
