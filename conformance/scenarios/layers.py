"""Scenarios of the layers area (OCI layers, image layouts, diffs), built by conformance/suite/layers/.

A layer is a list of tar entries, each {name, type: file|dir|symlink|hardlink, content, mode, uid, gid,
target}, written in that order; the probe (conformance/probe/layer_checks.py) builds the tars.
"""

from __future__ import annotations

from typing import Any

from conformance.scenarios import Scenario

Entry = dict[str, Any]


def file(name: str, content: str = "", **attrs: Any) -> Entry:
    """A regular file entry."""
    return {"name": name, "type": "file", "content": content, **attrs}


def directory(name: str, **attrs: Any) -> Entry:
    """A directory entry."""
    return {"name": name, "type": "dir", **attrs}


def symlink(name: str, target: str) -> Entry:
    """A symlink entry."""
    return {"name": name, "type": "symlink", "target": target}


def hardlink(name: str, target: str, **attrs: Any) -> Entry:
    """A hardlink entry to an earlier entry."""
    return {"name": name, "type": "hardlink", "target": target, **attrs}


def whiteout(name: str) -> Entry:
    """The whiteout of `name` (dir/.wh.base)."""
    head, _, base = name.rpartition("/")
    return file(f"{head}/.wh.{base}" if head else f".wh.{base}")


def opaque(directory_name: str) -> Entry:
    """The opaque marker of a directory."""
    return file(f"{directory_name}/.wh..wh..opq")


def device(name: str, kind: str, major: int = 0, minor: int = 0, **attrs: Any) -> Entry:
    """A chardev, blockdev or fifo entry."""
    return {"name": name, "type": kind, "rdev": [major, minor], **attrs}


def apply(*layers: list[Entry], detail: bool = False) -> Scenario:
    """Apply the layers, base first, onto an empty rootfs beside a sentinel dir (detail: mtimes, xattrs)."""
    return Scenario("layers.apply", {"layers": [list(layer) for layer in layers], "detail": detail})


def ids(entries: list[Entry]) -> Scenario:
    """Apply one gzip-compressed layer and report its DiffID and digests."""
    return Scenario("layers.ids", {"entries": entries})


def chain_id(diff_ids: list[str]) -> Scenario:
    """Compute the ChainID of a stack of DiffIDs."""
    return Scenario("layers.chain_id", {"diff_ids": diff_ids})


def image(*layers: list[Entry], wrong_diff_id: int | None = None, gzip: bool = False,
          rootfs_type: str = "layers", compression: str | None = None) -> Scenario:
    """Write an image of the layers (base first) and apply it; optionally break one DiffID or rootfs.type.

    compression: "tar", "gzip" or "zstd" for every layer (gzip=True is "gzip").
    """
    return Scenario("layers.image", {"layers": [list(layer) for layer in layers], "wrong_diff_id": wrong_diff_id,
                                     "gzip": gzip, "rootfs_type": rootfs_type, "compression": compression})


def copy(*layers: list[Entry]) -> Scenario:
    """Copy an image (first layer uncompressed, the others gzip) as the implementation copies images.

    The probe reports the copy's DiffIDs and what each copied layer hashes to, uncompressed.
    """
    return Scenario("layers.copy", {"layers": [list(layer) for layer in layers]})


def blob(wrong: str, content: str = "conformance blob", delta: int = 1) -> Scenario:
    """Read a blob through a descriptor whose "digest" or "size" (by delta) does not match it ("none": control)."""
    return Scenario("layers.blob", {"wrong": wrong, "content": content, "delta": delta})


def layout(oci_layout: dict[str, Any] | None) -> Scenario:
    """Open a layout dir whose oci-layout file is missing (None) or holds this document."""
    return Scenario("layers.layout", {"oci_layout": oci_layout})


def diff(lower: list[Entry], upper: list[Entry]) -> Scenario:
    """Diff two trees (each built from entries) twice and apply the diff onto a copy of lower."""
    return Scenario("layers.diff", {"lower": lower, "upper": upper})


def stored(*layers: list[Entry]) -> Scenario:
    """Store an image of the layers as the implementation does for overlay mounts; read each layer's dir."""
    return Scenario("layers.stored", {"layers": [list(layer) for layer in layers]})


def flatten(*layers: list[Entry]) -> Scenario:
    """The container filesystem an implementation makes of an image, beside its own layers applied by ref."""
    return Scenario("layers.flatten", {"layers": [list(layer) for layer in layers]})


def build(base: list[Entry], context: dict[str, Any], containerfile: str) -> Scenario:
    """Build a Containerfile (FROM {base}, a local image of the base entries) with the given context.

    context: path -> {"content", "mode"} for a file, or {"tar": [entries]} for a tar to ADD.
    """
    return Scenario("layers.build", {"base": [list(base)], "context": context, "containerfile": containerfile})


def broken(kind: str) -> Scenario:
    """Read a one-layer image with one flaw: "manifest-not-json", "config-not-json", "missing-layer" or "none"."""
    return Scenario("layers.broken", {"kind": kind})
