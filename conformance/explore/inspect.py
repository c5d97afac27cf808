"""`conformance ref inspect`: what an image is made of, layer by layer, and how a container stacks on it.

The model is plain data built from the layout (every blob verified as it is read, every layer read
once for its entries); text, JSON and SVG are renderings of it. History entries are matched to
layers the way config.md says they correspond: the non-empty entries, in order, one per layer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from conformance.explore.entries import LayerContent, LayerEntry, compression_of, read_layer, read_upper
from conformance.explore.stack import LayerLabel, Stack, apply_entries, build_stack
from conformance.ref.digest import chain_id
from conformance.ref.layers import ApplyOptions
from conformance.ref.layout import Layout
from conformance.ref.oci import Descriptor

CONFIG_KEYS = ("Entrypoint", "Cmd", "Env", "WorkingDir", "User", "Labels")


@dataclass(frozen=True)
class LayerInfo:
    """One layer: its ids, sizes, the build step that made it and what it holds."""

    index: int
    digest: str
    diff_id: str
    chain_id: str
    media_type: str
    compressed_size: int
    size: int
    created_by: str | None
    comment: str | None
    content: LayerContent

    @property
    def diff_id_matches(self) -> bool:
        """The uncompressed tar hashes to the config's rootfs.diff_ids entry (config.md MUST)."""
        return self.content.diff_id == self.diff_id

    def to_json(self) -> dict[str, Any]:
        """Stable keys, full digests."""
        return {"index": self.index, "digest": self.digest, "diff_id": self.diff_id, "chain_id": self.chain_id,
                "media_type": self.media_type, "compressed_size": self.compressed_size, "size": self.size,
                "created_by": self.created_by, "comment": self.comment, "entries": len(self.content.entries),
                "files": self.content.files, "directories": self.content.count("dir"),
                "whiteouts": self.content.whiteouts, "diff_id_matches": self.diff_id_matches}


@dataclass(frozen=True)
class HistoryStep:
    """One build step; `layer` is the index of the layer it made, None for an empty_layer step (ENV, CMD...)."""

    created_by: str | None
    empty_layer: bool
    layer: int | None
    created: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    """The whole inspect model."""

    source: str
    ref: str | None
    manifest: Descriptor
    config_digest: str
    platform: str
    created: str | None
    layers: tuple[LayerInfo, ...]
    history: tuple[HistoryStep, ...]
    config: dict[str, Any]
    graph_driver: dict[str, Any] | None = None
    container: str | None = None
    upper: tuple[LayerEntry, ...] | None = None
    upper_source: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        """How the image was named on the command line."""
        return f"{self.source}:{self.ref}" if self.ref else self.source

    def stack(self, cap: int = 12) -> Stack:
        """The picture's model: layers, the container's layer (empty when none), the merged view."""
        labels = [(LayerLabel(f"Layer {layer.index}", _label_lines(layer)), layer.content.entries)
                  for layer in self.layers]
        upper_lines = ("read-write (UpperDir)", _upper_summary(self) if self.upper_source else
                       "none given (--container, --upper)")
        title = f"Container {self.container}" if self.container else "Container layer"
        return build_stack(labels, self.upper or (), upper_label=LayerLabel(title, upper_lines), cap=cap)

    def to_json(self) -> dict[str, Any]:
        """The model for machines: stable keys, full digests, the upper's entries when there is one."""
        stack = self.stack() if self.upper is not None else None
        upper = None
        if self.upper is not None and stack is not None:
            marks = _upper_marks(self)
            upper = [{**entry.to_json(), "marks": sorted(marks.get(entry.path, ()))} for entry in self.upper]
        return {"image": {"source": self.source, "ref": self.ref, "manifest": self.manifest.digest,
                          "manifest_media_type": self.manifest.media_type, "config": self.config_digest,
                          "platform": self.platform, "created": self.created},
                "layers": [layer.to_json() for layer in self.layers],
                "history": [{"created_by": s.created_by, "empty_layer": s.empty_layer, "layer": s.layer,
                             "created": s.created, "comment": s.comment} for s in self.history],
                "config": self.config, "graph_driver": self.graph_driver, "container": self.container,
                "upper": upper, "notes": list(self.notes)}


def _label_lines(layer: LayerInfo) -> tuple[str, ...]:
    step = layer.created_by or "(no history entry)"
    return (f"chain {short(layer.chain_id)}  diff {short(layer.diff_id)}", step,
            f"{layer.content.files} files · {layer.content.whiteouts} whiteouts · {size(layer.size)}")


def _upper_summary(info: ImageInfo) -> str:
    marks = _upper_marks(info)
    changed = [e for e in info.upper or () if e.kind != "dir" or e.is_marker]
    copied = sum(1 for e in changed if "copied-up" in marks.get(e.path, ()))
    gone = sum(1 for e in changed if e.is_marker)
    return f"{len(changed)} changes: {copied} copied up, {gone} whiteouts"


def _upper_marks(info: ImageInfo) -> dict[str, frozenset[str]]:
    view: dict[str, tuple[int, LayerEntry]] = {}
    for layer in info.layers:
        apply_entries(view, layer.index, layer.content.entries)
    marks = apply_entries(view, len(info.layers), info.upper or ())
    return {p: (m - {"replaces"}) | {"copied-up"} if "replaces" in m else m for p, m in marks.items()}


def short(digest: str) -> str:
    """The 12 hex digits Docker shows, without the algorithm."""
    return digest.split(":", 1)[-1][:12]


def size(count: int) -> str:
    """Bytes as a person reads them (binary units, one decimal)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def parse_image(spec: str) -> tuple[Path, str | None]:
    """Split `path[:tag]`.

    The shortest prefix before a colon that exists is the path, so tags may hold colons (a docker
    archive's `name:1`), and a path that exists whole is taken whole.
    """
    if os.path.exists(spec) or ":" not in spec:
        return Path(spec), None
    for at in (n for n, char in enumerate(spec) if char == ":"):
        if os.path.exists(spec[:at]):
            return Path(spec[:at]), spec[at + 1:] or None
    path, tag = spec.rsplit(":", 1)
    return Path(path), tag or None


def match_history(history: Sequence[Any], layers: int) -> tuple[HistoryStep, ...]:
    """Give each non-empty step the next layer index; extra steps (a malformed config) get none."""
    steps = []
    next_layer = 0
    for step in history:
        layer = None
        if not step.empty_layer and next_layer < layers:
            layer, next_layer = next_layer, next_layer + 1
        steps.append(HistoryStep(step.created_by, step.empty_layer, layer, step.created, step.comment))
    return tuple(steps)


def inspect_image(source: str | os.PathLike[str], ref: str | None = None, *,
                  options: ApplyOptions | None = None) -> ImageInfo:
    """Read the image `ref` of the layout at `source` into the model."""
    layout = Layout(source)
    descriptor = layout.resolve(ref)
    manifest = layout.manifest(descriptor)
    config = layout.config(manifest)
    document = config.document
    history = match_history(config.history, len(manifest.layers))
    made_by = {step.layer: step for step in history if step.layer is not None}
    notes = []
    if len(config.diff_ids) != len(manifest.layers):
        notes.append(f"the manifest has {len(manifest.layers)} layers but the config {len(config.diff_ids)} diff_ids")
    layers = []
    for n, layer in enumerate(manifest.layers):
        with layout.open_blob(layer) as reader:
            content = read_layer(reader, compression_of(layer.media_type), layer.short(), options=options)
            reader.drain()
        diff_id = config.diff_ids[n] if n < len(config.diff_ids) else content.diff_id
        chain = chain_id(list(config.diff_ids[:n + 1])) if n < len(config.diff_ids) else "?"
        step = made_by.get(n)
        info = LayerInfo(n, layer.digest, diff_id, chain, layer.media_type, layer.size, content.size,
                         step.created_by if step else None, step.comment if step else None, content)
        if not info.diff_id_matches:
            notes.append(f"layer {n}: its uncompressed digest is {content.diff_id}, not rootfs.diff_ids[{n}]")
        layers.append(info)
    summary = {key: value for key, value in (document.get("config") or {}).items() if key in CONFIG_KEYS}
    platform = "/".join(str(document.get(k)) for k in ("os", "architecture") if document.get(k))
    if document.get("variant"):
        platform += f"/{document['variant']}"
    return ImageInfo(str(source), ref, descriptor, manifest.config.digest, platform, document.get("created"),
                     tuple(layers), history, summary, notes=tuple(notes))


def with_upper(info: ImageInfo, upper: str | os.PathLike[str]) -> ImageInfo:
    """The model with a container's changes read from an overlay upper directory."""
    if not Path(upper).is_dir():  # os.walk would see an empty layer and say nothing
        raise NotADirectoryError(f"{upper}: not a directory (--upper takes an overlay upper directory)")
    return replace(info, upper=read_upper(upper), upper_source=str(upper))


def with_container(info: ImageInfo, store_root: str | os.PathLike[str], name: str) -> ImageInfo:
    """Unpack the image into the store (shared layers once), create or reuse container `name`, read its upper."""
    from conformance.ref.store import Store  # noqa: PLC0415

    store = Store(store_root)
    image = store.unpack(Layout(info.source), info.ref)
    container = store.create_container(image, name)
    return replace(info, graph_driver=container.data.to_json(), container=name, upper=read_upper(container.upper),
                   upper_source=str(container.upper))


# Text -------------------------------------------------------------------------------------------------


def render_json(info: ImageInfo) -> str:
    """JSON with sorted keys, so two runs over the same image give the same text."""
    return json.dumps(info.to_json(), indent=2, sort_keys=True, ensure_ascii=False)


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(widths[c]) if c in right else cell.ljust(widths[c]) for c, cell in enumerate(row)]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def render_text(info: ImageInfo, *, width: int = 120) -> str:
    """A page a person reads top to bottom: the image, its layers, its config, the container on top."""
    out = [f"Image     {info.name}",
           f"Manifest  {info.manifest.digest}  ({size(info.manifest.size)})",
           f"Config    {info.config_digest}",
           f"Platform  {info.platform or '?'}" + (f"    created {info.created}" if info.created else ""), ""]
    total_c = sum(layer.compressed_size for layer in info.layers)
    total_u = sum(layer.size for layer in info.layers)
    out.append(f"Layers, base first: {len(info.layers)} ({size(total_c)} compressed, {size(total_u)} uncompressed)")
    rows = [["#", "DIFF ID", "CHAIN ID", "COMPRESSED", "SIZE", "FILES", "WHITEOUTS"]]
    for layer in info.layers:
        rows.append([str(layer.index), short(layer.diff_id), short(layer.chain_id), size(layer.compressed_size),
                     size(layer.size), str(layer.content.files), str(layer.content.whiteouts)])
    lines = _table(rows, {0, 3, 4, 5, 6})
    steps = ["CREATED BY", *(" ".join((layer.created_by or "-").split()) for layer in info.layers)]
    for line, made in zip(lines, steps, strict=True):
        out.append(f"{line}  {_clip(made, max(20, width - len(line) - 2))}")
    out.extend(f"  ! {note}" for note in info.notes)
    empty = [s for s in info.history if s.empty_layer]
    if empty:
        out += ["", f"History: {len(info.history)} steps, {len(empty)} without a layer"]
        for step in info.history:
            where = f"L{step.layer}" if step.layer is not None else "--"
            out.append(f"  {where:>3}  " + _clip(" ".join((step.created_by or "-").split()), width - 7))
    out += ["", "Config"]
    for key in CONFIG_KEYS:
        value = info.config.get(key)
        if key == "User" and not value:
            value = "(root)"
        if isinstance(value, dict):
            shown = [f"{k}={v}" for k, v in sorted(value.items())] or ["-"]
        elif key == "Env" and isinstance(value, list):
            shown = [str(v) for v in value] or ["-"]
        elif isinstance(value, list):
            shown = [json.dumps(value)]
        else:
            shown = [str(value) if value else "-"]
        out.append(f"  {key:<11} {shown[0]}")
        out.extend(f"  {'':<11} {more}" for more in shown[1:])
    if info.graph_driver is not None:
        out += _graph_driver_text(info)
    if info.upper is not None:
        out += _upper_text(info)
    return "\n".join(out) + "\n"


def _graph_driver_text(info: ImageInfo) -> list[str]:
    assert info.graph_driver is not None
    data = info.graph_driver["Data"]
    out = ["", f"GraphDriver ({info.graph_driver['Name']}), container {info.container}"]
    lowers = data["LowerDir"].split(":")
    for n, lower in enumerate(lowers):
        which = len(lowers) - 1 - n
        out.append(f"  {'LowerDir' if n == 0 else '':<10} {lower}  (layer {which}{', top' if n == 0 else ''}"
                   f"{', base' if which == 0 else ''})")
    for key in ("UpperDir", "WorkDir", "MergedDir"):
        out.append(f"  {key:<10} {data[key]}")
    out.append(f"  mount it:  mount -t overlay overlay -o lowerdir={data['LowerDir']},upperdir={data['UpperDir']},"
               f"workdir={data['WorkDir']} {data['MergedDir']}")
    return out


def _upper_text(info: ImageInfo) -> list[str]:
    upper = info.upper or ()
    out = ["", f"Container layer ({info.upper_source}): {len(upper)} entries"]
    marks = _upper_marks(info)
    for entry in upper:
        note = entry.meaning() or ("copied up from the image" if "copied-up" in marks.get(entry.path, ()) else
                                   "new" if "new" in marks.get(entry.path, ()) else "")
        out.append(f"  {entry.kind:<8} {entry.path}" + (f"   {note}" if note else ""))
    if not upper:
        out.append("  (empty: the container has changed nothing)")
    return out
