"""`conformance ref layer show`: one layer's entries, with what each whiteout does to the layers below.

A layer is named three ways: a blob file (tar, tar.gz, tar.zst: the first bytes say which),
`LAYOUT@sha256:...` (a blob of a layout, checked against its digest as it is read), or
`LAYOUT[:tag]#N` (the N-th layer of an image, base 0, with its DiffID from the config).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from conformance.explore.entries import LayerContent, compression_of, read_blob_file, read_layer, sniff
from conformance.explore.inspect import parse_image, short, size
from conformance.ref.layout import Layout
from conformance.ref.oci import LAYER_TAR, Descriptor


@dataclass(frozen=True)
class ShownLayer:
    """A layer read for showing, and what is known about it besides its content."""

    name: str
    media_type: str
    content: LayerContent
    diff_id: str | None = None  # from the image config, when the layer was named through an image


def load_layer(spec: str) -> ShownLayer:
    """Read the layer `spec` names (see the module doc)."""
    if "@" in spec and not os.path.isfile(spec):
        where, digest = spec.rsplit("@", 1)
        layout = Layout(where)
        path = layout.blob_path(digest)
        try:
            with open(path, "rb") as blob:
                kind = sniff(blob.read(4))
            found = os.stat(path).st_size
        except FileNotFoundError:
            raise LookupError(f"{where}: no blob {digest}") from None
        media_type = {"gzip": LAYER_TAR + "+gzip", "zstd": LAYER_TAR + "+zstd"}.get(kind, LAYER_TAR)
        return _from_layout(layout, Descriptor(media_type, digest, found), spec, None)
    if "#" in spec and not os.path.isfile(spec):
        image, _, number = spec.rpartition("#")
        path, ref = parse_image(image)
        layout = Layout(path)
        manifest = layout.manifest(layout.resolve(ref))
        config = layout.config(manifest)
        try:
            index = int(number)
            layer = manifest.layers[index]
        except (ValueError, IndexError):
            raise LookupError(f"{image}: no layer {number!r}; it has {len(manifest.layers)} (0 is the base)") from None
        diff_id = config.diff_ids[index] if index < len(config.diff_ids) else None
        return _from_layout(layout, layer, spec, diff_id)
    if not os.path.isfile(spec):
        raise LookupError(f"{spec}: not a file, LAYOUT@sha256:..., or LAYOUT[:tag]#N")
    with open(spec, "rb") as blob:
        kind = sniff(blob.read(4))
    media_type = {"gzip": LAYER_TAR + "+gzip", "zstd": LAYER_TAR + "+zstd"}.get(kind, LAYER_TAR)
    return ShownLayer(Path(spec).name, media_type, read_blob_file(spec))


def _from_layout(layout: Layout, descriptor: Descriptor, name: str, diff_id: str | None) -> ShownLayer:
    with layout.open_blob(descriptor) as reader:
        content = read_layer(reader, compression_of(descriptor.media_type), descriptor.short())
        reader.drain()
    return ShownLayer(name, descriptor.media_type, content, diff_id)


def render_json(layer: ShownLayer) -> str:
    """The layer and its entries, stable keys."""
    content = layer.content
    doc = {"layer": layer.name, "media_type": layer.media_type, "digest": content.digest,
           "compressed_size": content.compressed_size, "size": content.size, "diff_id": content.diff_id,
           "config_diff_id": layer.diff_id, "files": content.files, "directories": content.count("dir"),
           "whiteouts": content.whiteouts, "entries": [e.to_json() for e in content.entries]}
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False)


def render_text(layer: ShownLayer) -> str:
    """`ls -l` of the layer, archive order, whiteouts spelled out."""
    content = layer.content
    out = [f"Layer     {layer.name}",
           f"Digest    {content.digest}  ({layer.media_type.rsplit('.', 1)[-1]}, {size(content.compressed_size)})",
           f"DiffID    {content.diff_id}  ({size(content.size)} uncompressed)"]
    if layer.diff_id is not None and layer.diff_id != content.diff_id:
        out.append(f"  ! the image config says {layer.diff_id} ({short(layer.diff_id)}): they differ")
    out.append(f"Entries   {len(content.entries)}: {content.files} files, {content.count('dir')} directories, "
               f"{content.whiteouts} whiteouts")
    out.append("")
    rows = [("TYPE", "MODE", "UID:GID", "SIZE", "PATH")]
    for entry in content.entries:
        path = entry.path + ("/" if entry.kind == "dir" else "")
        if entry.kind == "symlink":
            path += f" -> {entry.target}"
        elif entry.kind == "hardlink":
            path += f" => {entry.target} (hardlink)"
        elif entry.device is not None:
            path += f"  [{entry.device[0]}:{entry.device[1]}]"
        if entry.is_marker:
            path += f"   <- {entry.meaning()}"
        rows.append((entry.kind, entry.mode_string(), f"{entry.uid}:{entry.gid}",
                     str(entry.size) if entry.kind == "file" else "-", path))
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    for row in rows:
        out.append(f"  {row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  "
                   f"{row[3]:>{widths[3]}}  {row[4]}")
    if not content.entries:
        out.append("  (no entries)")
    return "\n".join(out) + "\n"
