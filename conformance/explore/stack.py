"""The layer stack as a person should see it: which layer each file comes from, and what each layer changed.

The merged view is computed here in memory from the layers' entries, the way overlayfs resolves a
lookup (overlayfs.rst): top layer first, a whiteout or an opaque directory stops the search below.
Each layer's entries are classified against the view beneath it: a whiteout that hides something
(or nothing), a file that replaces a lower one, a file in the container's upper layer that also
exists in the image (copied up: overlayfs copies a lower file up before its first write).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from conformance.explore.entries import LayerEntry

#: Boxes drawn per band; the last slot says "+N more" when there are more.
CAP = 12

UPPER = "upper"
MERGED = "merged"
LAYER = "layer"


@dataclass(frozen=True)
class Box:
    """One path drawn in one band. `source` is the layer index it comes from (the upper's is len(layers))."""

    path: str
    kind: str
    source: int
    marks: frozenset[str] = frozenset()
    target: str = ""


@dataclass(frozen=True)
class Band:
    """One horizontal band of the picture: an image layer, the container's upper layer, or the merged view."""

    role: str
    source: int
    title: str
    lines: tuple[str, ...]
    boxes: tuple[Box, ...]
    total: int

    @property
    def more(self) -> int:
        """Paths of this band not drawn."""
        return self.total - len(self.boxes)


@dataclass(frozen=True)
class LayerLabel:
    """What the caller knows to say about a layer: a title and a few short lines (id, instruction, sizes)."""

    title: str
    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stack:
    """Bands from the top of the picture down: merged, upper (when there is one), then layers top to base."""

    bands: tuple[Band, ...]
    layers: int
    has_upper: bool
    hidden: int = 0
    view: dict[str, tuple[int, LayerEntry]] = field(default_factory=dict)


def apply_entries(view: dict[str, tuple[int, LayerEntry]], source: int,
                  entries: Sequence[LayerEntry]) -> dict[str, frozenset[str]]:
    """Put one layer on `view` (path -> (source, entry)); returns each entry's marks against the view below.

    Whiteouts and opaque markers go first: they apply only to lower layers (layer.md), so the
    layer's own entries, added next, are never hidden by them.
    """
    below = dict(view)
    marks: dict[str, frozenset[str]] = {}
    for entry in entries:
        if entry.kind == "whiteout":
            gone = _drop(view, entry.hides, keep_top=False)
            marks[entry.path] = frozenset({"whiteout"} if gone else {"whiteout", "hides-nothing"})
        elif entry.kind == "opaque":
            gone = _drop(view, entry.hides, keep_top=True)
            marks[entry.path] = frozenset({"opaque"} if gone else {"opaque", "hides-nothing"})
    for entry in entries:
        if entry.is_marker:
            continue
        existing = view.get(entry.path)
        if existing is not None and existing[1].kind == "dir" and entry.kind != "dir":
            _drop(view, entry.path, keep_top=True)
        parts = entry.path.split("/")
        for length in range(1, len(parts)):
            parent = "/".join(parts[:length])
            if parent not in view or view[parent][1].kind != "dir":
                view[parent] = (source, LayerEntry(parent, "dir", 0o755))
        view[entry.path] = (source, entry)
        lower = below.get(entry.path)
        if lower is None or entry.kind == "dir":
            marks[entry.path] = frozenset({"new"} if lower is None else set())
        else:
            marks[entry.path] = frozenset({"replaces"})
    return marks


def _drop(view: dict[str, tuple[int, LayerEntry]], path: str, *, keep_top: bool) -> int:
    """Remove `path` (unless keep_top) and everything below it; returns how many paths went."""
    prefix = f"{path}/" if path else ""
    gone = [p for p in view if p.startswith(prefix) or (p == path and not keep_top)]
    for p in gone:
        del view[p]
    return len(gone)


def build_stack(layers: Sequence[tuple[LayerLabel, Sequence[LayerEntry]]], upper: Sequence[LayerEntry] | None = None,
                *, upper_label: LayerLabel | None = None, cap: int = CAP) -> Stack:
    """The bands for the layers (base first) and an optional upper layer."""
    view: dict[str, tuple[int, LayerEntry]] = {}
    bands: list[Band] = []
    hidden = 0
    for n, (label, entries) in enumerate(layers):
        marks = apply_entries(view, n, entries)
        hidden += sum(1 for m in marks.values() if m & {"whiteout", "opaque"} and "hides-nothing" not in m)
        bands.append(_band(LAYER, n, label, entries, marks, cap))
    if upper is not None:
        n = len(layers)
        marks = apply_entries(view, n, upper)
        marks = {path: (m - {"replaces"}) | {"copied-up"} if "replaces" in m else m for path, m in marks.items()}
        hidden += sum(1 for m in marks.values() if m & {"whiteout", "opaque"} and "hides-nothing" not in m)
        label = upper_label or LayerLabel("Container layer", ("read-write (UpperDir)",))
        bands.append(_band(UPPER, n, label, upper, marks, cap))
    bands.append(_merged_band(view, len(layers) + (upper is not None), hidden, cap))
    return Stack(tuple(reversed(bands)), len(layers), upper is not None, hidden, view)


def _band(role: str, source: int, label: LayerLabel, entries: Sequence[LayerEntry],
          marks: dict[str, frozenset[str]], cap: int) -> Band:
    """Markers first, then what changes something below, then new paths; directories only when marked."""
    boxes = [Box(e.path, e.kind, source, marks.get(e.path, frozenset()), e.target) for e in entries
             if e.kind != "dir"]

    def interest(box: Box) -> tuple[int, str]:
        if box.marks & {"whiteout", "opaque"}:
            return 0, box.path
        if box.marks & {"replaces", "copied-up"}:
            return 1, box.path
        return 2, box.path

    boxes.sort(key=interest)
    return Band(role, source, label.title, label.lines, tuple(_capped(boxes, cap)), len(boxes))


def _merged_band(view: dict[str, tuple[int, LayerEntry]], sources: int, hidden: int, cap: int) -> Band:
    """Visible non-directories, taken in turn from each source, top first, so every layer's colour shows."""
    by_source: dict[int, list[Box]] = {}
    for path, (source, entry) in sorted(view.items()):
        if entry.kind != "dir":
            by_source.setdefault(source, []).append(Box(path, entry.kind, source, frozenset(), entry.target))
    queues = [by_source[s] for s in sorted(by_source, reverse=True)]
    chosen: list[Box] = []
    total = sum(len(q) for q in queues)
    while len(chosen) < total:
        for queue in queues:
            if queue:
                chosen.append(queue.pop(0))
    files = total
    dirs = sum(1 for _, entry in view.values() if entry.kind == "dir")
    lines = (f"{files} files, {dirs} directories", f"{hidden} whiteouts in effect", f"from {sources} layers")
    return Band(MERGED, -1, "Merged view", lines, tuple(_capped(chosen, cap)), total)


def _capped(boxes: list[Box], cap: int) -> list[Box]:
    """All of them when they fit, else one slot fewer than the cap, leaving room for "+N more"."""
    return boxes if len(boxes) <= cap else boxes[:cap - 1]
