"""The layer-stack picture: well-formed, one band per layer, marks where they belong, nothing off the canvas."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from conformance.explore import inspect, svg
from conformance.explore.entries import LayerEntry
from conformance.explore.stack import LayerLabel, build_stack
from conformance.ref.layout import Layout

NS = {"s": "http://www.w3.org/2000/svg"}


def _render(demo: Layout, upper: tuple[LayerEntry, ...] | None = None) -> ET.Element:
    info = inspect.inspect_image(demo.path, "demo")
    if upper is not None:
        info = info.__class__(**{**info.__dict__, "upper": upper, "upper_source": "test"})
    return ET.fromstring(svg.render_svg(info.stack(), title="Layer stack of demo:demo", subtitle="test"))


def _classes(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root.iter() if name in (e.get("class") or "").split()]


def test_svg_has_a_band_per_layer_plus_upper_and_merged(demo: Layout) -> None:
    root = _render(demo)
    titles = [band.get("data-title") for band in _classes(root, "band")]
    assert titles == ["Merged view", "Container layer", "Layer 3", "Layer 2", "Layer 1", "Layer 0"]


def test_svg_marks_whiteouts_opaque_dirs_and_copy_ups(demo: Layout) -> None:
    upper = (LayerEntry("etc", "dir"), LayerEntry("etc/hostname", "file"), LayerEntry("etc/group", "whiteout",
                                                                                     hides="etc/group"))
    root = _render(demo, upper)
    # README (layer 3), motd and apt/ (layer 1), group (container): each box carries the red X.
    assert len(_classes(root, "mark-whiteout")) >= 4
    assert len(_classes(root, "copied-up")) == 1
    struck = {t.text for t in _classes(root, "struck")}
    assert struck == {"README", "motd", "group"}
    assert any(r.get("fill") == "url(#hatch)" for r in root.iter("{http://www.w3.org/2000/svg}rect"))


def test_nothing_is_drawn_outside_the_canvas(demo: Layout) -> None:
    root = _render(demo)
    width, height = float(root.get("width") or 0), float(root.get("height") or 0)
    assert root.get("viewBox") == f"0 0 {int(width)} {int(height)}"
    for rect in root.iter("{http://www.w3.org/2000/svg}rect"):
        if rect.get("x") is None:
            continue
        x, y = float(rect.get("x") or 0), float(rect.get("y") or 0)
        w, h = float(rect.get("width") or 0), float(rect.get("height") or 0)
        assert x >= 0 and x + w <= width and y >= 0 and y + h <= height, rect.attrib
    for text in root.iter("{http://www.w3.org/2000/svg}text"):
        x, y = float(text.get("x") or 0), float(text.get("y") or 0)
        size = float(text.get("font-size") or 12)
        span = len(text.text or "") * size * 0.62 * (0.5 if text.get("text-anchor") == "middle" else 1)
        assert x >= 0 and x + span <= width and 0 < y <= height, (text.text, x, span)


def test_a_crowded_band_is_capped_with_a_count_of_the_rest() -> None:
    many = [LayerEntry(f"f{n:02}", "file") for n in range(30)]
    stack = build_stack([(LayerLabel("Layer 0"), many)], ())
    base = stack.bands[-1]
    assert len(base.boxes) == 11 and base.more == 19
    root = ET.fromstring(svg.render_svg(stack, title="t", subtitle="s"))
    assert [t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if (t.text or "").startswith("+")] == [
        "+19 more", "+19 more"]  # the layer and the merged view


def test_merged_view_follows_whiteouts_and_opaque_directories() -> None:
    """The merged band's model: whited-out and opaque-hidden lower paths are gone, re-added ones are back."""
    lower = [LayerEntry("d", "dir"), LayerEntry("d/a", "file"), LayerEntry("d/b", "file"), LayerEntry("x", "file")]
    upper = [LayerEntry("d/.wh..wh..opq", "opaque", hides="d"), LayerEntry("d/c", "file"),
             LayerEntry(".wh.x", "whiteout", hides="x"), LayerEntry("x", "file")]
    stack = build_stack([(LayerLabel("L0"), lower), (LayerLabel("L1"), upper)])
    assert {p: s for p, (s, _) in stack.view.items()} == {"d": 0, "d/c": 1, "x": 1}
