"""OCI layer scenarios: build small layer tars and image layouts in the sandbox, apply them, look.

Each action runs the implementation named by ctx.implementation (only "ref", the readable reference
in conformance/ref, for now) on inputs it builds itself inside ctx.sandbox, and answers with plain
data: trees as path -> {type, content, mode, uid, gid, target, nlink}, errors as {error, type}.

Faulty variants: ctx.fault names a clause; FAULT_BEHAVIOURS maps it to the behaviour the reference
implementation knows by name (its `faults` keyword), so ref itself never hears of clause IDs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from typing import Any

from conformance.probe.actions import Context, action

JsonDict = dict[str, Any]

#: clause ID -> the deliberately wrong behaviour of conformance/ref that must break it.
FAULT_BEHAVIOURS: dict[str, str] = {
    "LAYER-WH-001": "ignore-whiteouts",
    "LAYER-WH-002": "whiteouts-hit-own-layer",
    "LAYER-WH-003": "ignore-opaque",
    "LAYER-WH-004": "whiteouts-hit-own-layer",
    "LAYER-WH-005": "extract-whiteouts",
    "LAYER-WH-006": "accept-bad-whiteouts",
    "LAYER-HL-001": "drop-hardlinks",
    "LAYER-SYM-001": "relative-symlinks",
    "LAYER-ATTR-001": "ignore-modes",
    "LAYER-SAFE-001": "follow-symlinks",
    "LAYER-DIFF-001": "omit-whiteouts",
    "LAYER-DIFF-002": "nondeterministic-diff",
    "OCI-MANIFEST-001": "reverse-layers",
    "OCI-DESC-001": "skip-digest-check",
    "OCI-DESC-002": "skip-size-check",
    "OCI-CONFIG-001": "diff-id-of-blob",
    "OCI-CONFIG-002": "skip-diff-id-check",
    "OCI-CONFIG-003": "chain-id-without-space",
    "OCI-LAYOUT-001": "skip-layout-check",
}

MTIME = 1_600_000_000  # every entry's mtime, so that equal trees built twice are equal


def _faults(ctx: Context) -> frozenset[str]:
    if ctx.implementation != "ref":
        raise ValueError(f"implementation {ctx.implementation!r} has no layer actions (only 'ref')")
    behaviour = FAULT_BEHAVIOURS.get(ctx.fault or "")
    return frozenset({behaviour}) if behaviour else frozenset()


def _error(exc: BaseException) -> JsonDict:
    return {"error": str(exc), "type": type(exc).__name__}


def build_tar(entries: list[JsonDict]) -> bytes:
    """A layer tar of entries {name, type: file|dir|symlink|hardlink, content, mode, uid, gid, target}, in order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry["name"])
            info.mtime = MTIME
            info.uid, info.gid = entry.get("uid", 0), entry.get("gid", 0)
            kind = entry.get("type", "file")
            data = entry.get("content", "").encode()
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, entry.get("mode", 0o755)
            elif kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry["target"], 0o777
            elif kind == "hardlink":
                info.type, info.linkname, info.mode = tarfile.LNKTYPE, entry["target"], entry.get("mode", 0o644)
            else:
                info.mode, info.size = entry.get("mode", 0o644), len(data)
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return out.getvalue()


def read_tree(base: str) -> JsonDict:
    """Every entry under base (recursively), path -> what it is."""
    tree: JsonDict = {}
    for directory, dirs, files in os.walk(base):
        dirs.sort()
        for name in sorted(dirs + files):
            full = os.path.join(directory, name)
            st = os.lstat(full)
            entry: JsonDict = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                               "nlink": st.st_nlink}
            if stat.S_ISREG(st.st_mode):
                with open(full, encoding="utf-8", errors="replace") as handle:
                    entry.update(type="file", content=handle.read())
            elif stat.S_ISDIR(st.st_mode):
                entry.update(type="dir", nlink=None)
            elif stat.S_ISLNK(st.st_mode):
                entry.update(type="symlink", target=os.readlink(full))
            else:
                entry["type"] = "other"
            tree[os.path.relpath(full, base)] = entry
    return tree


def _sentinel(ctx: Context) -> str:
    """A dir beside the rootfs that no apply may touch."""
    path = ctx.sandbox.path("sentinel")
    if not os.path.isdir(path):
        os.mkdir(path)
        with open(os.path.join(path, "keep"), "w", encoding="utf-8") as handle:
            handle.write("untouched")
    return path


def _fresh_dir(ctx: Context, name: str) -> str:
    path = ctx.sandbox.path(name)
    os.mkdir(path, 0o755)
    return path


@action("layers.apply")
def apply_layers(params: JsonDict, ctx: Context) -> JsonDict:
    """Apply the given layers (lists of entries, base first) onto an empty rootfs; the last one as the test's."""
    from conformance.ref.layers import ApplyOptions, apply_layer  # noqa: PLC0415

    faults = _faults(ctx)
    sentinel = _sentinel(ctx)
    before = read_tree(sentinel)
    rootfs = _fresh_dir(ctx, "rootfs")
    result: JsonDict = {}
    for n, layer in enumerate(params["layers"]):
        # Hostile scenarios name the sentinel's place as {sentinel}, or climb to it relatively.
        entries = [{key: value.replace("{sentinel}", sentinel) if isinstance(value, str) else value
                    for key, value in entry.items()} for entry in layer]
        try:
            apply_layer(rootfs, build_tar(entries), options=ApplyOptions(faults=faults), label=f"layer{n}")
        except Exception as exc:  # any failure is an observation
            result.update(_error(exc), failed_layer=n)
            break
    result.update(tree=read_tree(rootfs), sentinel_changed=read_tree(sentinel) != before)
    return result


@action("layers.ids")
def layer_ids(params: JsonDict, ctx: Context) -> JsonDict:
    """Apply one gzip layer; report the DiffID the implementation computed next to the digests of the bytes."""
    from conformance.ref.layers import ApplyOptions, apply_layer  # noqa: PLC0415
    from conformance.ref.oci import LAYER_GZIP  # noqa: PLC0415

    tar = build_tar(params["entries"])
    blob = gzip.compress(tar, mtime=0)
    stats = apply_layer(_fresh_dir(ctx, "rootfs"), blob, media_type=LAYER_GZIP,
                        options=ApplyOptions(faults=_faults(ctx)))
    return {"diff_id": stats.diff_id, "digest": stats.digest,
            "sha256_tar": f"sha256:{hashlib.sha256(tar).hexdigest()}",
            "sha256_blob": f"sha256:{hashlib.sha256(blob).hexdigest()}"}


@action("layers.chain_id")
def chain_id(params: JsonDict, ctx: Context) -> JsonDict:
    """The ChainID the implementation computes for a list of DiffIDs."""
    from conformance.ref.digest import chain_id as ref_chain_id  # noqa: PLC0415

    return {"chain_id": ref_chain_id(list(params["diff_ids"]), faults=_faults(ctx))}


@action("layers.image")
def apply_image(params: JsonDict, ctx: Context) -> JsonDict:
    """Write an image layout of the given layers, optionally with a wrong DiffID, and apply it."""
    from conformance.ref.image import apply_image as ref_apply_image  # noqa: PLC0415
    from conformance.ref.layers import ApplyOptions  # noqa: PLC0415
    from conformance.ref.layout import Layout  # noqa: PLC0415

    layout = Layout.create(ctx.sandbox.path("layout"))
    layers = []
    for entries in params["layers"]:
        descriptor, diff = layout.add_layer(build_tar(entries), compress=bool(params.get("gzip")))
        layers.append((descriptor, diff))
    if params.get("wrong_diff_id") is not None:  # the config names another tar's DiffID for this layer
        n = params["wrong_diff_id"]
        layers[n] = (layers[n][0], f"sha256:{hashlib.sha256(build_tar([])).hexdigest()}")
    layout.add_image(None, layers)
    rootfs = _fresh_dir(ctx, "rootfs")
    result: JsonDict = {}
    try:
        ref_apply_image(layout.path, None, rootfs, options=ApplyOptions(faults=_faults(ctx)))
    except Exception as exc:
        result.update(_error(exc))
    result["tree"] = read_tree(rootfs)
    return result


@action("layers.blob")
def read_blob(params: JsonDict, ctx: Context) -> JsonDict:
    """Store a blob, then read it through a descriptor that is wrong as asked: "digest" or "size"."""
    from conformance.ref.layout import Layout  # noqa: PLC0415
    from conformance.ref.oci import Descriptor  # noqa: PLC0415

    content = params["content"].encode()
    writer = Layout.create(ctx.sandbox.path("layout"))
    good = writer.add_blob(content, "application/octet-stream")
    descriptor = good
    if params["wrong"] == "digest":  # same length, other bytes, under the old digest's name
        with open(writer.blob_path(good.digest), "wb") as handle:
            handle.write(bytes(b ^ 0x20 for b in content))
    else:
        descriptor = Descriptor(good.media_type, good.digest, good.size + params.get("delta", 1), {})
    try:
        Layout(writer.path, faults=_faults(ctx)).verify_blob(descriptor)
    except Exception as exc:
        return {"verified": False, **_error(exc)}
    return {"verified": True}


@action("layers.layout")
def open_layout(params: JsonDict, ctx: Context) -> JsonDict:
    """Open a directory as an image layout; its oci-layout file is missing or holds the given document."""
    from conformance.ref.layout import Layout  # noqa: PLC0415

    path = ctx.sandbox.path("layout")
    os.makedirs(os.path.join(path, "blobs", "sha256"))
    with open(os.path.join(path, "index.json"), "w", encoding="utf-8") as handle:
        json.dump({"schemaVersion": 2, "manifests": []}, handle)
    if params.get("oci_layout") is not None:
        with open(os.path.join(path, "oci-layout"), "w", encoding="utf-8") as handle:
            json.dump(params["oci_layout"], handle)
    try:
        Layout(path, faults=_faults(ctx))
    except Exception as exc:
        return {"opened": False, **_error(exc)}
    return {"opened": True}


@action("layers.diff")
def diff(params: JsonDict, ctx: Context) -> JsonDict:
    """Build lower and upper (twice each), diff them twice, apply one diff onto a copy of lower."""
    from conformance.ref.diff import diff_trees  # noqa: PLC0415
    from conformance.ref.layers import apply_layer  # noqa: PLC0415

    faults = _faults(ctx)
    trees: dict[str, str] = {}
    for name in ("lower", "upper", "lower2", "upper2", "result"):
        trees[name] = _fresh_dir(ctx, name)
        apply_layer(trees[name], build_tar(params["upper" if name.startswith("upper") else "lower"]))
    first = diff_trees(trees["lower"], trees["upper"], faults=faults)
    second = diff_trees(trees["lower2"], trees["upper2"], faults=faults)
    apply_layer(trees["result"], first)
    return {"digests": [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in (first, second)],
            "upper": read_tree(trees["upper"]), "result": read_tree(trees["result"])}
