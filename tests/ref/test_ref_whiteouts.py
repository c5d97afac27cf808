"""Whiteouts and opaque whiteouts (image-spec layer.md § Whiteouts; OCI-WH-* in overlay_layers.md § 2.2)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from trees import Entry, directory, file, make_tar, whiteout

from conformance.ref.layers import apply_layer


def listing(root: Path) -> dict[str, bytes | None]:
    """Every path under root, with file contents (None for anything else)."""
    found: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            found[str(full.relative_to(root))] = full.read_bytes() if full.is_file() and not full.is_symlink() else None
    return found


def applied(root: Path, *layers: tuple[Entry, ...]) -> dict[str, bytes | None]:
    for entries in layers:
        apply_layer(root, make_tar(*entries))
    return listing(root)


BASE = (directory("bin"), file("bin/a", b"a"), file("bin/b", b"b"), directory("bin/tools"),
        file("bin/tools/x", b"x"), file("foo", b"old"))


def test_whiteout_hides_lower_file(scratch: Path) -> None:
    """OCI-WH-001: `.wh.foo` in a layer deletes the lower `foo`."""
    assert "foo" not in applied(scratch, BASE, (whiteout(".wh.foo"),))


def test_whiteout_of_directory_removes_descendants(scratch: Path) -> None:
    """OCI-WH-005: `.wh.bin` deletes `bin/` and everything below it."""
    result = applied(scratch, BASE, (whiteout(".wh.bin"),))
    assert not [path for path in result if path == "bin" or path.startswith("bin/")]


@pytest.mark.parametrize("whiteout_first", [True, False], ids=["whiteout-first", "whiteout-last"])
def test_same_layer_whiteout_does_not_hide_re_added_file(scratch: Path, whiteout_first: bool) -> None:
    """OCI-WH-004: a whiteout applies only to lower layers; `foo` re-added in the same layer survives,
    whichever comes first in the tar."""
    layer = (whiteout(".wh.foo"), file("foo", b"new"))
    result = applied(scratch, BASE, layer if whiteout_first else layer[::-1])
    assert result["foo"] == b"new"


@pytest.mark.parametrize("whiteout_first", [True, False], ids=["whiteout-first", "whiteout-last"])
def test_same_layer_whiteout_of_directory_keeps_re_added_children(scratch: Path, whiteout_first: bool) -> None:
    """`rm -rf bin && mkdir bin && touch bin/c` as explicit whiteout: lower children go, `bin/c` stays."""
    layer = (whiteout(".wh.bin"), directory("bin"), file("bin/c", b"c"))
    result = applied(scratch, BASE, layer if whiteout_first else (*layer[1:], layer[0]))
    assert {p for p in result if p.startswith("bin")} == {"bin", "bin/c"}


OPAQUE_LAYER = (directory("bin"), whiteout("bin/.wh..wh..opq"), file("bin/c", b"c"), directory("bin/tools"),
                file("bin/tools/y", b"y"))


@pytest.mark.parametrize("position", range(len(OPAQUE_LAYER)))
def test_opaque_hides_lower_children_but_not_same_layer_entries_wherever_it_is(scratch: Path, position: int) -> None:
    """OCI-WH-007, OCI-WH-008: `bin/.wh..wh..opq` hides every lower child of bin (and their children),
    never the layer's own `bin/c` and `bin/tools/y`, at any position in the tar."""
    others = [entry for entry in OPAQUE_LAYER if entry.name != "bin/.wh..wh..opq"]
    layer = (*others[:position], OPAQUE_LAYER[1], *others[position:])
    result = applied(scratch, BASE, layer)
    assert {p for p in result if p.startswith("bin")} == {"bin", "bin/c", "bin/tools", "bin/tools/y"}
    assert result["foo"] == b"old"


def test_opaque_keeps_the_directory_and_its_new_attributes(scratch: Path) -> None:
    applied(scratch, BASE, (directory("bin", mode=0o700), whiteout("bin/.wh..wh..opq")))
    assert (scratch / "bin").is_dir() and os.listdir(scratch / "bin") == []
    assert (scratch / "bin").stat().st_mode & 0o7777 == 0o700


def test_whiteout_of_absent_path_creates_nothing(scratch: Path) -> None:
    """OCI-WH-011: `x/.wh.y` over a base without `x` is a no-op; `x/` is not created (umoci's choice)."""
    result = applied(scratch, BASE, (whiteout("x/.wh.y"), whiteout("x/.wh..wh..opq")))
    assert "x" not in result


def test_no_whiteout_name_remains(scratch: Path) -> None:
    """OCI-WH-003: once applied, the whiteouts themselves are hidden."""
    result = applied(scratch, BASE, OPAQUE_LAYER, (whiteout(".wh.foo"), whiteout("bin/.wh.c")))
    assert not [p for p in result if os.path.basename(p).startswith(".wh.")]


def test_every_order_of_a_mixed_layer_gives_one_result(scratch: Path) -> None:
    """Whiteouts, an opaque marker and re-added entries in all 120 orders: one rootfs."""
    layer = (whiteout(".wh.foo"), file("foo", b"new"), whiteout("bin/.wh..wh..opq"), file("bin/c", b"c"),
             whiteout("bin/.wh.b"))
    results = set()
    for n, order in enumerate(itertools.permutations(layer)):
        root = scratch / str(n)
        root.mkdir()
        results.add(tuple(sorted(applied(root, BASE, (directory("bin"), *order)).items())))
    assert len(results) == 1
    assert dict(results.pop()) == {"bin": None, "bin/c": b"c", "foo": b"new"}
