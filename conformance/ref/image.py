"""Apply a whole image from an OCI layout: verify everything first, then apply the layers in order.

manifest.md: the final filesystem "MUST match the result of applying the layers to an empty
directory", base layer first. descriptor.md: content from untrusted sources SHOULD be verified before
use, so every layer blob is read once to check its digest, its size and its DiffID (config.md
rootfs.diff_ids: the digest of the *uncompressed* tar) before the rootfs is touched; the apply pass
checks them again as it reads, in case a blob changed in between.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass

from conformance.ref.errors import LayoutError
from conformance.ref.layers import ApplyOptions, ApplyStats, apply_layer
from conformance.ref.layout import Layout, write_layout
from conformance.ref.oci import REF_NAME, Descriptor, Manifest, layer_compression
from conformance.ref.streams import TarStream


@dataclass(frozen=True)
class ImageStats:
    """What apply_image did: which manifest, and each layer's ApplyStats, base first."""

    manifest: str
    layers: tuple[ApplyStats, ...]


def apply_image(layout: Layout | str | os.PathLike[str], ref: str | None, rootfs: str | os.PathLike[str], *,
                options: ApplyOptions | None = None) -> ImageStats:
    """Apply the image `ref` (its ref.name; None for a layout's only image) of `layout` onto `rootfs`."""
    options = options or ApplyOptions()
    layout = layout if isinstance(layout, Layout) else Layout(layout, faults=options.faults)
    descriptor, manifest, config = layout.image(ref)
    for layer in manifest.layers:
        try:
            layer_compression(layer.media_type)
        except LayoutError as err:
            raise LayoutError(f"layer {layer.digest}: {err}") from None
    layers = [(layer, config.diff_ids[n]) for n, layer in enumerate(manifest.layers)]  # lengths checked above
    if "reverse-layers" in options.faults:  # FAULT: top layer first
        layers.reverse()
    check_diff_ids = "skip-diff-id-check" not in options.faults  # FAULT point when false
    if "missing-blob-as-empty" in options.faults:  # FAULT: a layer the layout lacks is skipped, not an error
        layers = [(layer, diff_id) for layer, diff_id in layers if layout.blob_path(layer.digest).exists()]
    for n, (layer, diff_id) in enumerate(layers):
        with layout.open_blob(layer) as reader:
            tar = TarStream(reader, layer_compression(layer.media_type), options.max_bytes, layer.short())
            tar.drain()
            reader.drain()
        if tar.diff_id() != diff_id and check_diff_ids:
            raise LayoutError(f"layer {layer.digest}: uncompressed digest {tar.diff_id()} is not "
                              f"rootfs.diff_ids[{n}] {diff_id}")
    applied = []
    for layer, diff_id in layers:
        with layout.open_blob(layer) as reader:
            applied.append(apply_layer(rootfs, reader, media_type=layer.media_type, options=options,
                                       label=layer.short(), expected_diff_id=diff_id if check_diff_ids else None))
            reader.drain()
    return ImageStats(descriptor.digest, tuple(applied))


def copy_image(source: Layout | str | os.PathLike[str], ref: str | None, destination: str | os.PathLike[str],
               dest_ref: str, *, faults: frozenset[str] = frozenset()) -> Descriptor:
    """Copy an image into another layout, blob for blob: nothing a digest covers may change.

    considerations.md: implementations storing or copying content MUST NOT alter it in a way that
    would change its digest. Each blob is read through its descriptor (so verified) and written as it
    was; only index.json, which names the image, is new.
    """
    source = source if isinstance(source, Layout) else Layout(source)
    descriptor = source.resolve(ref)
    manifest = source.manifest(descriptor)
    target = Layout.create(destination)
    if "repack-on-copy" in faults:  # FAULT: layers re-tarred in GNU format, and the config updated to match
        return _repacked_copy(source, manifest, target, dest_ref)
    for blob in (manifest.config, *manifest.layers):
        with source.open_blob(blob) as reader:
            target.add_blob(reader, blob.media_type)
            reader.drain()
    copied = target.add_blob(source.read_blob(descriptor), descriptor.media_type, {REF_NAME: dest_ref})
    kept = [m for m in target.index().manifests if m.ref_name != dest_ref]
    write_layout(target.path, [*kept, copied])
    return copied


def _repacked_copy(source: Layout, manifest: Manifest, target: Layout, dest_ref: str) -> Descriptor:
    config = source.config(manifest)
    layers = []
    for blob in manifest.layers:
        with source.open_blob(blob) as reader:
            tar = TarStream(reader, layer_compression(blob.media_type), 1 << 34, blob.short())
            parts = []
            while chunk := tar.read(1 << 20):
                parts.append(chunk)
            data = b"".join(parts)
        out = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(data)) as old, tarfile.open(fileobj=out, mode="w",
                                                                         format=tarfile.GNU_FORMAT) as new:
            for member in old:
                new.addfile(member, old.extractfile(member) if member.isfile() else None)
        layers.append(target.add_layer(out.getvalue()))
    return target.add_image(dest_ref, layers, history=config.history,
                            config=(config.document.get("config") or None))
