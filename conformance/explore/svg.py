"""The layer stack drawn as SVG: image layers at the bottom, the container's layer above, the merged view on top.

Every position is computed here and the template (templates/stack.svg.j2) only writes the markup, so
a test can check that nothing leaves the canvas. Text is cut to the width it is given with an
ellipsis, counting monospace characters at 0.6 em, which is what the common monospace fonts measure.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, StrictUndefined

from conformance.explore.stack import LAYER, MERGED, UPPER, Band, Box, Stack

WIDTH = 1200
MARGIN = 24
LABEL_W = 300
BOX_W, BOX_H, GAP, COLUMNS = 132, 42, 8, 6
PAD = 12
BAND_GAP = 8
SECTION_GAP = 30
TITLE_H = 64
LEGEND_H = 70

#: Image layers, base first, cycle through these (Tableau 10: distinct, and readable as tints).
PALETTE = ("#4C78A8", "#54A24B", "#B279A2", "#9D755D", "#72B7B2", "#EECA3B", "#79706E", "#FF9DA6")
UPPER_COLOUR = "#F58518"
MERGED_COLOUR = "#5B6770"
RED = "#D62728"
INK = "#1F2933"
MUTED = "#5F6B76"

_SECTIONS = {MERGED: "MERGED VIEW  ·  MergedDir: what the container sees; each file tagged with its layer",
             UPPER: "CONTAINER LAYER  ·  UpperDir: read-write, changes go here",
             LAYER: "IMAGE LAYERS  ·  LowerDir: read-only, base at the bottom"}


@dataclass(frozen=True)
class BoxView:
    """One file's box, placed."""

    x: float
    y: float
    fill: str
    stroke: str
    dashed: bool
    hatched: bool
    name: str
    sub: str
    strike: bool
    badge: str  # "", "whiteout", "copied-up", "replaces"
    tag: str  # the source layer, in the merged band
    tag_colour: str
    title: str  # the full path, as a tooltip


@dataclass(frozen=True)
class BandView:
    """One band, placed, with its boxes."""

    y: float
    height: float
    colour: str
    background: str
    title: str
    lines: tuple[str, ...]
    boxes: tuple[BoxView, ...]
    more: str
    more_x: float
    more_y: float
    empty: str
    section: str
    section_y: float


def colour_of(source: int, layers: int) -> str:
    """The colour of a layer index; the upper layer (index == layers) is orange."""
    return UPPER_COLOUR if source >= layers else PALETTE[source % len(PALETTE)]


def tint(colour: str, white: float) -> str:
    """`colour` mixed with `white` parts of white (0..1): light fills that keep black text readable."""
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * white):02X}" for c in rgb)


def fit(text: str, width: float, size: float, *, left: bool = False) -> str:
    """`text` cut to `width` pixels of `size`-px monospace, with an ellipsis (at the start when `left`)."""
    room = max(1, int(width / (size * 0.6)))
    if len(text) <= room:
        return text
    return "…" + text[-(room - 1):] if left else text[:room - 1] + "…"


def _rows(count: int) -> int:
    return max(1, -(-count // COLUMNS))


def _box(box: Box, x: float, y: float, band: Band, layers: int) -> BoxView:
    colour = colour_of(box.source, layers)
    name = posixpath.basename(box.path) or box.path
    parent = posixpath.dirname(box.path)
    sub = f"/{parent}" if parent else "/"
    badge = ""
    strike = dashed = hatched = False
    fill, stroke = tint(colour, 0.78), colour
    if "whiteout" in box.marks or "opaque" in box.marks:
        dashed = True
        fill, stroke = "#FDECEA", RED
        if "opaque" in box.marks:
            name = (posixpath.basename(parent) or "/") + "/"
            sub = "opaque directory"
            hatched = True
        else:
            name = name.removeprefix(".wh.")
            strike = True
        badge = "whiteout"
        if "hides-nothing" in box.marks:
            fill, stroke = "#F4F4F4", "#9AA5B1"
            sub = "hides nothing below"
    elif "copied-up" in box.marks:
        badge = "copied-up"
        sub = "copied up"
    elif "replaces" in box.marks:
        badge = "replaces"
    if box.kind == "symlink":
        sub = f"→ {box.target}"
    elif box.kind == "hardlink":
        sub = f"⇒ {box.target}"
    text_room = BOX_W - 16 - (14 if badge else 0)
    tag = ""
    if band.role == MERGED:
        tag = "C" if box.source >= layers else f"L{box.source}"
        text_room -= 8 * len(tag)
    return BoxView(x, y, fill, stroke, dashed, hatched, fit(name, text_room, 12), fit(sub, BOX_W - 16, 10, left=True),
                   strike, badge, tag, colour, box.path)


def layout(stack: Stack) -> tuple[list[BandView], float]:
    """Place the bands top down; returns them and the y where the legend starts."""
    views: list[BandView] = []
    y = MARGIN + TITLE_H
    previous = ""
    x0 = MARGIN + LABEL_W + 16
    for band in stack.bands:
        section = ""
        section_y = 0.0
        if band.role != previous:
            y += SECTION_GAP if previous else 18
            section, section_y = _SECTIONS[band.role], y - 8
            previous = band.role
        slots = len(band.boxes) + (1 if band.more else 0)
        label_h = 2 * PAD + 18 + 15 * len(band.lines)
        height = max(label_h, 2 * PAD + _rows(slots) * (BOX_H + GAP) - GAP)
        colour = MERGED_COLOUR if band.role == MERGED else colour_of(band.source, stack.layers)
        boxes = []
        for n, box in enumerate(band.boxes):
            row, column = divmod(n, COLUMNS)
            boxes.append(_box(box, x0 + column * (BOX_W + GAP), y + PAD + row * (BOX_H + GAP), band, stack.layers))
        row, column = divmod(len(band.boxes), COLUMNS)
        empty = ""
        if not band.boxes:
            empty = {UPPER: "empty: the container has changed nothing yet", MERGED: "empty"}.get(
                band.role, "no files: directories only")
        views.append(BandView(
            y, height, colour, tint(colour, 0.93), fit(band.title, LABEL_W - 26, 14 / 0.6 * 0.55),
            tuple(fit(line, LABEL_W - 26, 11) for line in band.lines), tuple(boxes),
            f"+{band.more} more" if band.more else "", x0 + column * (BOX_W + GAP), y + PAD + row * (BOX_H + GAP),
            empty, section, section_y))
        y += height + BAND_GAP
    return views, y + 10


def legend(y: float) -> list[dict[str, object]]:
    """The legend's items, placed left to right."""
    items = [("layer", "file, in its layer's colour"), ("replaces", "replaces a lower file"),
             ("whiteout", "whiteout: deletes a lower path"), ("opaque", "opaque dir: hides lower children"),
             ("copied-up", "copied up on first write")]
    placed = []
    x = float(MARGIN + 8)
    for kind, text in items:
        placed.append({"kind": kind, "x": x, "y": y + 30, "text": text})
        x += 34 + len(text) * 6.2 + 30
    return placed


def render_svg(stack: Stack, *, title: str, subtitle: str) -> str:
    """The whole picture as one SVG document."""
    bands, legend_y = layout(stack)
    height = legend_y + LEGEND_H
    env = Environment(loader=PackageLoader("conformance.explore", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    template = env.get_template("stack.svg.j2")
    return template.render(
        width=WIDTH, height=round(height), margin=MARGIN, label_w=LABEL_W, box_w=BOX_W, box_h=BOX_H,
        title=fit(title, WIDTH - 2 * MARGIN, 20 / 0.6 * 0.55), subtitle=fit(subtitle, WIDTH - 2 * MARGIN, 12),
        bands=bands, legend=legend(legend_y), legend_y=legend_y, red=RED, ink=INK, muted=MUTED,
        upper=UPPER_COLOUR, sample=PALETTE[0], sample_fill=tint(PALETTE[0], 0.78))
