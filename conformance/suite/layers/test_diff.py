"""LAYER-DIFF-*: a diff of two trees rebuilds the upper tree, and the same trees give the same layer."""

from __future__ import annotations

import pytest

from conformance.scenarios import layers
from conformance.scenarios.layers import directory, file, symlink
from conformance.target import Target

LOWER = [directory("etc"), file("etc/conf", "old"), file("etc/gone", "bye"), directory("var"),
         directory("var/cache"), file("var/cache/x", "x"), file("keep", "same")]
UPPER = [directory("etc"), file("etc/conf", "new", mode=0o600), directory("etc/app.d"),
         file("etc/app.d/default.cfg", "cfg"), symlink("link", "/etc/conf"), file("keep", "same")]


@pytest.mark.clause("LAYER-DIFF-001")
def test_diff_applied_onto_lower_reproduces_upper(target: Target) -> None:
    """Diff lower -> upper (changes, additions, deletions) and apply it on lower: the result MUST be upper."""
    seen = target.observe(layers.diff(LOWER, UPPER))
    target.expect("lower + diff", seen["upper"], seen["result"],
                  hint="additions and modifications in full, deletions as whiteouts")


@pytest.mark.clause("LAYER-DIFF-002")
def test_same_trees_give_the_same_layer(target: Target) -> None:
    """Two diffs of equal trees built apart SHOULD give the same digest."""
    seen = target.observe(layers.diff(LOWER, UPPER))
    first, second = seen["digests"]
    target.expect("digest of the second diff", first, second)
