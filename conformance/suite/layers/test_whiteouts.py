"""LAYER-WH-*: whiteouts and opaque markers delete what lower layers hold, and only that."""

from __future__ import annotations

import pytest

from conformance.scenarios import layers
from conformance.scenarios.layers import directory, file, opaque, whiteout
from conformance.target import Target


def _names(tree: dict[str, object]) -> list[str]:
    return sorted(tree)


@pytest.mark.clause("LAYER-WH-001")
def test_whiteout_deletes_the_lower_entry(target: Target) -> None:
    """Lower holds a and b; a layer with .wh.a MUST remove a and keep b."""
    seen = target.observe(layers.apply([file("a", "lower a"), file("b", "lower b")], [whiteout("a")]))
    target.expect("apply error", None, seen.get("error"))
    target.expect("rootfs names", ["b"], _names(seen["tree"]), hint="a whiteout deletes the name it carries")


@pytest.mark.clause("LAYER-WH-002")
def test_whiteout_spares_its_own_layers_entry_in_both_orders(target: Target) -> None:
    """Lower holds foo; a layer with foo and .wh.foo, in either order, MUST leave the layer's own foo."""
    lower = [file("foo", "lower")]
    for order, layer in (("whiteout first", [whiteout("foo"), file("foo", "same layer")]),
                         ("whiteout last", [file("foo", "same layer"), whiteout("foo")])):
        seen = target.observe(layers.apply(lower, layer))
        target.expect(f"apply error ({order})", None, seen.get("error"))
        target.expect(f"rootfs/foo ({order})", "same layer", seen["tree"].get("foo", {}).get("content"),
                      hint="whiteouts only apply to lower layers (layer.md § Whiteouts)")


@pytest.mark.clause("LAYER-WH-003")
def test_opaque_whiteout_hides_lower_children(target: Target) -> None:
    """Lower holds d/old and d/sub/x; a layer with d/.wh..wh..opq MUST leave d empty but present."""
    lower = [directory("d"), file("d/old", "lower"), directory("d/sub"), file("d/sub/x", "lower")]
    seen = target.observe(layers.apply(lower, [directory("d"), opaque("d")]))
    target.expect("apply error", None, seen.get("error"))
    target.expect("rootfs names", ["d"], _names(seen["tree"]))


@pytest.mark.clause("LAYER-WH-004")
def test_opaque_whiteout_spares_its_own_layers_entries(target: Target) -> None:
    """Lower holds d/old; a layer with d/new then d/.wh..wh..opq MUST give d holding only new."""
    seen = target.observe(layers.apply([directory("d"), file("d/old", "lower")],
                                       [directory("d"), file("d/new", "same layer"), opaque("d")]))
    target.expect("apply error", None, seen.get("error"))
    target.expect("rootfs names", ["d", "d/new"], _names(seen["tree"]),
                  hint="the opaque marker is applied first, whatever its place in the tar")


@pytest.mark.clause("LAYER-WH-005")
def test_whiteout_files_never_land_in_the_rootfs(target: Target) -> None:
    """A layer of whiteouts (one naming nothing there) and an opaque marker MUST leave no .wh. name."""
    lower = [file("a", "lower"), directory("d"), file("d/x", "lower")]
    seen = target.observe(layers.apply(lower, [whiteout("a"), whiteout("absent"), directory("d"), opaque("d")]))
    target.expect("apply error", None, seen.get("error"))
    left = [name for name in seen["tree"] if ".wh." in name]
    target.expect("names with .wh. in the rootfs", [], left)


@pytest.mark.clause("LAYER-WH-006")
def test_whiteouts_naming_nothing_or_dots_are_refused(target: Target) -> None:
    """Layers holding d/.wh., d/.wh.. or d/.wh... SHOULD each be refused, the sentinel beside untouched."""
    lower = [directory("d"), file("d/x", "lower")]
    for name in ("d/.wh.", "d/.wh..", "d/.wh..."):
        seen = target.observe(layers.apply(lower, [file(name)]))
        actual = seen.get("error") or f"no error; rootfs {sorted(seen['tree'])}"
        target.expect_that(f"applying {name}", "error" in seen and seen.get("failed_layer") == 1,
                           "an error for the second layer", actual)
        target.expect(f"sentinel changed ({name})", False, seen["sentinel_changed"])


@pytest.mark.clause("LAYER-WH-007")
def test_whiteout_of_a_directory_removes_its_subtree(target: Target) -> None:
    """Lower holds b/c/d/e and keep; a layer with .wh.b MUST leave only keep."""
    lower = [directory("b"), directory("b/c"), directory("b/c/d"), file("b/c/d/e", "deep"), file("b/f", "x"),
             file("keep", "kept")]
    seen = target.observe(layers.apply(lower, [whiteout("b")]))
    target.expect("apply error", None, seen.get("error"))
    target.expect("rootfs names", ["keep"], _names(seen["tree"]))


@pytest.mark.clause("LAYER-WH-008")
def test_whiteout_under_a_missing_parent_changes_nothing(target: Target) -> None:
    """Lower holds only a; a layer with x/.wh.y SHOULD apply without error and leave only a."""
    seen = target.observe(layers.apply([file("a", "a")], [whiteout("x/y")]))
    target.expect("apply error", None, seen.get("error"))
    target.expect("rootfs names", ["a"], _names(seen["tree"]), hint="no directory is made for a whiteout")
