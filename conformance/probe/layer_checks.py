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

from conformance.probe.actions import Context, NotApplicable, action
from conformance.probe.appliers import (
    TAG,
    ApplyRefused,
    DockerSession,
    LayerBlob,
    PodmanSession,
    applier_for,
    prune_engine_additions,
    quiet,
    reader_for,
    run_tool,
    write_layout,
)

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
    "OCI-CONFIG-004": "skip-rootfs-type-check",
    "OCI-COPY-001": "repack-on-copy",
    "LAYER-WH-007": "ignore-whiteouts",
    "LAYER-STORE-001": "whiteouts-as-files",
    "LAYER-SAFE-002": "follow-symlinks",
    "OCI-MANIFEST-002": "lowers-bottom-first",
    "LAYER-BUILD-001": "snapshot-layers",
    "OCI-CONFIG-005": "history-without-empty-layer",
    "LAYER-WH-008": "mkdir-whiteout-parents",
    "LAYER-DIR-001": "dir-keeps-old-attributes",
    "LAYER-REPLACE-001": "write-in-place",
    "LAYER-DEV-001": "skip-devices",
    "LAYER-ATTR-002": "ignore-mtimes",
    "LAYER-ATTR-003": "ignore-xattrs",
    "OCI-MEDIA-001": "gzip-as-tar",
    "OCI-MEDIA-002": "no-zstd",
    "LAYER-SAFE-003": "lenient-reader",
    "OCI-LAYOUT-002": "missing-blob-as-empty",
}

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"  # conformance.ref.oci.LAYER_TAR, without importing ref
LAYER_GZIP = LAYER_TAR + "+gzip"
MTIME = 1_600_000_000  # every entry's mtime, so that equal trees built twice are equal


def _faults(ctx: Context) -> frozenset[str]:
    """The reference's fault behaviours; scenarios only the reference can run say so for the others."""
    if ctx.implementation != "ref":
        raise NotApplicable(f"{ctx.implementation} has no way to run this scenario")
    behaviour = FAULT_BEHAVIOURS.get(ctx.fault or "")
    return frozenset({behaviour}) if behaviour else frozenset()


def _error(exc: BaseException) -> JsonDict:
    return {"error": str(exc), "type": type(exc).__name__}


def build_tar(entries: list[JsonDict]) -> bytes:
    """A layer tar of entries, in order.

    An entry is {name, type: file|dir|symlink|hardlink|chardev|blockdev|fifo, content, mode, uid, gid,
    target, rdev: [major, minor], mtime, xattrs: {name: text}}; xattrs go in PAX SCHILY.xattr records.
    """
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry["name"])
            info.mtime = entry.get("mtime", MTIME)
            info.uid, info.gid = entry.get("uid", 0), entry.get("gid", 0)
            info.pax_headers = {f"SCHILY.xattr.{name}": value for name, value in (entry.get("xattrs") or {}).items()}
            kind = entry.get("type", "file")
            data = entry.get("content", "").encode()
            if kind in ("chardev", "blockdev", "fifo"):
                info.type = {"chardev": tarfile.CHRTYPE, "blockdev": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
                info.mode = entry.get("mode", 0o644)
                info.devmajor, info.devminor = entry.get("rdev", [0, 0])
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, entry.get("mode", 0o755)
            elif kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry["target"], 0o777
            elif kind == "hardlink":
                info.type, info.linkname, info.mode = tarfile.LNKTYPE, entry["target"], entry.get("mode", 0o644)
            else:
                info.mode, info.size = entry.get("mode", 0o644), len(data)
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return out.getvalue()


def read_tree(base: str, *, detail: bool = False) -> JsonDict:
    """Every entry under base (recursively), path -> what it is; with detail, mtimes and xattrs too.

    Overlay's own trusted.overlay.* xattrs are left out: they describe a store, not a file.
    """
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
                opaque = _overlay_opaque(full)
                if opaque is not None:
                    entry["opaque"] = opaque
            elif stat.S_ISLNK(st.st_mode):
                entry.update(type="symlink", target=os.readlink(full))
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                entry.update(type="chardev" if stat.S_ISCHR(st.st_mode) else "blockdev",
                             rdev=[os.major(st.st_rdev), os.minor(st.st_rdev)])
            elif stat.S_ISFIFO(st.st_mode):
                entry["type"] = "fifo"
            else:
                entry["type"] = "other"
            if detail:
                entry["mtime"] = int(st.st_mtime)
                entry["xattrs"] = {name: os.getxattr(full, name, follow_symlinks=False).decode(errors="replace")
                                   for name in sorted(os.listxattr(full, follow_symlinks=False))
                                   if not name.startswith("trusted.overlay.")}
            tree[os.path.relpath(full, base)] = entry
    return tree


def compress(tar: bytes, compression: str) -> LayerBlob:
    """A layer blob of the tar as tar, gzip or zstd (by the zstd tool, which the host has for zstd layers)."""
    if compression == "tar":
        return LayerBlob(tar, LAYER_TAR)
    if compression == "gzip":
        return LayerBlob(gzip.compress(tar, mtime=0), LAYER_GZIP)
    if compression == "zstd":
        import subprocess  # noqa: PLC0415

        try:
            done = subprocess.run(["zstd", "-q", "-c", "-19"], input=tar, capture_output=True, timeout=60, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise NotApplicable(f"no zstd tool on this host to write a zstd layer: {exc}") from None
        return LayerBlob(done.stdout, LAYER_TAR + "+zstd")
    raise ValueError(f"unknown compression {compression!r}")


def _overlay_opaque(path: str) -> str | None:
    """The overlay opaque mark of a directory (trusted.* as root, user.* for userxattr mounts), if any."""
    for name in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            return os.getxattr(path, name, follow_symlinks=False).decode(errors="replace")
        except OSError:
            continue
    return None


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
    applier = applier_for(ctx)
    sentinel = _sentinel(ctx)
    before = read_tree(sentinel)
    # Hostile scenarios name the sentinel's place as {sentinel}, or climb to it relatively.
    blobs = [LayerBlob(build_tar([{key: value.replace("{sentinel}", sentinel) if isinstance(value, str) else value
                                   for key, value in entry.items()} for entry in layer]), LAYER_TAR)
             for layer in params["layers"]]
    result: JsonDict = {}
    workdir = _fresh_dir(ctx, "work")
    rootfs = os.path.join(workdir, "rootfs")
    try:
        rootfs = applier.apply(blobs, workdir)
    except ApplyRefused as exc:  # a refusal is an observation
        result.update(error=exc.message, failed_layer=exc.layer if exc.layer is not None else len(blobs) - 1)
    detail = bool(params.get("detail"))
    result.update(tree=read_tree(rootfs, detail=detail) if os.path.isdir(rootfs) else {},
                  sentinel_changed=read_tree(sentinel) != before)
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
    """Write an image of the given layers, optionally with a wrong DiffID, and apply it as a whole."""
    from conformance.ref.image import apply_image as ref_apply_image  # noqa: PLC0415
    from conformance.ref.layers import ApplyOptions  # noqa: PLC0415

    tars = [build_tar(entries) for entries in params["layers"]]
    compression = params.get("compression") or ("gzip" if params.get("gzip") else "tar")
    blobs = [compress(tar, compression) for tar in tars]
    diff_ids = [f"sha256:{hashlib.sha256(tar).hexdigest()}" for tar in tars]
    if params.get("wrong_diff_id") is not None:  # the config names another tar's DiffID for this layer
        diff_ids[params["wrong_diff_id"]] = f"sha256:{hashlib.sha256(build_tar([])).hexdigest()}"
    rootfs_doc = {"type": params.get("rootfs_type", "layers"), "diff_ids": diff_ids}
    result: JsonDict = {}
    if ctx.implementation != "ref":
        applier = applier_for(ctx)
        workdir = _fresh_dir(ctx, "work")
        rootfs = os.path.join(workdir, "rootfs")
        try:
            rootfs = applier.apply(blobs, workdir, {"rootfs": rootfs_doc})
        except ApplyRefused as exc:
            result.update(error=exc.message)
        result["tree"] = read_tree(rootfs) if os.path.isdir(rootfs) else {}
        return result

    layout = write_layout(ctx.sandbox.path("layout"), blobs, {"rootfs": rootfs_doc})
    rootfs = _fresh_dir(ctx, "rootfs")
    try:
        ref_apply_image(layout, None, rootfs, options=ApplyOptions(faults=_faults(ctx)))
    except Exception as exc:
        result.update(_error(exc))
    result["tree"] = read_tree(rootfs)
    return result


def _tool_layout(ctx: Context, content: bytes, *, size_delta: int = 0) -> tuple[str, str]:
    """A layout holding one image (TAG) of one layer; the layer descriptor's size off by size_delta.

    Returns the layout's path and the layer blob's path (to corrupt it in place).
    """
    from conformance.ref.layout import Layout  # noqa: PLC0415
    from conformance.ref.oci import Descriptor  # noqa: PLC0415

    tar = build_tar([{"name": "payload", "type": "file", "content": content.decode()}])
    layout = Layout.create(ctx.sandbox.path("layout"))
    descriptor, diff_id = layout.add_layer(tar)
    if size_delta:
        descriptor = Descriptor(descriptor.media_type, descriptor.digest, descriptor.size + size_delta, {})
    layout.add_image(TAG, [(descriptor, diff_id)], config={"Cmd": ["/conformance-never-run"]})
    return str(layout.path), str(layout.blob_path(descriptor.digest))


def _tool_reads(ctx: Context, layout: str) -> JsonDict:
    """Whether the tool read the whole image from the layout without complaint."""
    reader = reader_for(ctx)
    try:
        reader.read(layout, _fresh_dir(ctx, "work"))
    except ApplyRefused as exc:
        return {"verified": False, "opened": False, "error": exc.message}
    return {"verified": True, "opened": True}


@action("layers.blob")
def read_blob(params: JsonDict, ctx: Context) -> JsonDict:
    """Store a blob, then read it through a descriptor that is wrong as asked: "digest", "size" or "none"."""
    from conformance.ref.layout import Layout  # noqa: PLC0415
    from conformance.ref.oci import Descriptor  # noqa: PLC0415

    content = params["content"].encode()
    if ctx.implementation != "ref":  # a tool reads the image the blob is a layer of
        layout_path, blob_path = _tool_layout(ctx, content,
                                              size_delta=params.get("delta", 1) if params["wrong"] == "size" else 0)
        if params["wrong"] == "digest":  # same length, other bytes, under the old digest's name
            with open(blob_path, "r+b") as handle:
                data = handle.read()
                handle.seek(0)
                handle.write(data[:512] + bytes(b ^ 0x20 for b in data[512:512 + len(content)])
                             + data[512 + len(content):])  # the payload's bytes, right after its header
        return _tool_reads(ctx, layout_path)
    writer = Layout.create(ctx.sandbox.path("layout"))
    good = writer.add_blob(content, "application/octet-stream")
    descriptor = good
    if params["wrong"] == "digest":  # same length, other bytes, under the old digest's name
        with open(writer.blob_path(good.digest), "wb") as handle:
            handle.write(bytes(b ^ 0x20 for b in content))
    elif params["wrong"] == "size":
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

    if ctx.implementation != "ref":  # a tool is given a whole image, then its oci-layout is replaced or removed
        layout_path, _ = _tool_layout(ctx, b"conformance layout")
        marker = os.path.join(layout_path, "oci-layout")
        os.unlink(marker)
        if params.get("oci_layout") is not None:
            with open(marker, "w", encoding="utf-8") as handle:
                json.dump(params["oci_layout"], handle)
        return _tool_reads(ctx, layout_path)
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

    if ctx.implementation == "umoci":
        return _umoci_diff(params, ctx)
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


def _umoci_diff(params: JsonDict, ctx: Context) -> JsonDict:
    """`umoci repack` as the generator: unpack an image of lower, make the rootfs upper, repack, twice.

    The rootfs is emptied and upper applied over it with the reference (same names, contents, modes and
    times as the scenario says), so what umoci finds changed against its mtree of lower is the diff.
    """
    from conformance.ref.layers import apply_layer  # noqa: PLC0415
    from conformance.ref.layout import Layout  # noqa: PLC0415
    from conformance.ref.tarsafe import remove_tree  # noqa: PLC0415

    made: list[LayerBlob] = []
    for n in (1, 2):
        work = _fresh_dir(ctx, f"umoci{n}")
        layout = write_layout(os.path.join(work, "layout"), [LayerBlob(build_tar(params["lower"]), LAYER_TAR)])
        bundle = os.path.join(work, "bundle")
        try:
            run_tool(["umoci", "unpack", "--image", f"{layout}:{TAG}", bundle], what="umoci unpack")
            rootfs = os.path.join(bundle, "rootfs")
            fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for name in os.listdir(fd):
                    if stat.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode):
                        remove_tree(fd, name)
                    else:
                        os.unlink(name, dir_fd=fd)
            finally:
                os.close(fd)
            apply_layer(rootfs, build_tar(params["upper"]))
            run_tool(["umoci", "repack", "--image", f"{layout}:repacked", bundle], what="umoci repack")
        except ApplyRefused as exc:
            return {"error": exc.message}
        opened = Layout(layout)
        top = opened.manifest(opened.resolve("repacked")).layers[-1]
        made.append(LayerBlob(opened.read_blob(top, limit=1 << 30), top.media_type))
    trees = {name: _fresh_dir(ctx, name) for name in ("upper", "result")}
    apply_layer(trees["upper"], build_tar(params["upper"]))
    apply_layer(trees["result"], build_tar(params["lower"]))
    apply_layer(trees["result"], made[0].data, media_type=made[0].media_type)
    return {"digests": [_uncompressed_digest(blob.data) for blob in made],
            "upper": read_tree(trees["upper"]), "result": read_tree(trees["result"])}


def _uncompressed_digest(data: bytes) -> str:
    """sha256 of a layer's tar, whatever compression the copy chose (gzip sniffed by its magic)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _read_layout_copy(path: str, ref: str | None) -> JsonDict:
    """DiffIDs and uncompressed layer digests of the image in an OCI layout (zstd is not expected here)."""
    from conformance.ref.layout import Layout  # noqa: PLC0415

    layout = Layout(path)
    manifest = layout.manifest(layout.resolve(ref))
    layers = [_uncompressed_digest(layout.read_blob(layer, limit=1 << 30)) for layer in manifest.layers]
    return {"diff_ids": list(layout.config(manifest).diff_ids), "layers": layers,
            "media_types": [layer.media_type for layer in manifest.layers]}


def _read_docker_archive(path: str) -> JsonDict:
    """DiffIDs and uncompressed layer digests of the image in a `docker save` archive."""
    with tarfile.open(path) as archive:
        def member(name: str) -> bytes:
            handle = archive.extractfile(name)
            if handle is None:
                raise ValueError(f"{path}: {name} is not a file")
            return handle.read()

        [entry] = json.loads(member("manifest.json"))
        config = json.loads(member(entry["Config"]))
        layers = [_uncompressed_digest(member(name)) for name in entry["Layers"]]
    return {"diff_ids": config["rootfs"]["diff_ids"], "layers": layers, "media_types": ["docker-archive"] * len(layers)}


@action("layers.copy")
def copy_image(params: JsonDict, ctx: Context) -> JsonDict:
    """Copy an image as the implementation copies images; what the copy says and holds."""
    tars = [build_tar(entries) for entries in params["layers"]]
    blobs = [LayerBlob(tar, LAYER_TAR) if n == 0 else LayerBlob(gzip.compress(tar, mtime=0), LAYER_GZIP)
             for n, tar in enumerate(tars)]
    original = {"diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}" for tar in tars]}
    work = _fresh_dir(ctx, "work")
    source = write_layout(os.path.join(work, "source"), blobs)
    copy = os.path.join(work, "copy")
    try:
        if ctx.implementation == "ref":
            from conformance.ref.image import copy_image as ref_copy  # noqa: PLC0415

            ref_copy(source, TAG, copy, TAG, faults=_faults(ctx))
            seen = _read_layout_copy(copy, TAG)
        elif ctx.implementation == "skopeo":
            archive = os.path.join(work, "copy.tar")
            run_tool(["skopeo", "copy", "--quiet", f"oci:{source}:{TAG}",
                      f"docker-archive:{archive}:conformance/copy:1"], what="skopeo copy to docker-archive")
            run_tool(["skopeo", "copy", "--quiet", f"docker-archive:{archive}", f"oci:{copy}:{TAG}"],
                     what="skopeo copy from docker-archive")
            seen = _read_layout_copy(copy, TAG)
        elif ctx.implementation == "docker":
            docker = DockerSession.load(ctx, blobs, work)
            docker.run("save", "-o", os.path.join(work, "saved.tar"), docker.image, what="docker save")
            seen = _read_docker_archive(os.path.join(work, "saved.tar"))
        elif ctx.implementation == "podman":
            podman = PodmanSession.pull(ctx, source, work)
            podman.run("push", "-q", podman.image_id, f"oci:{copy}:{TAG}", what="podman push")
            seen = _read_layout_copy(copy, TAG)
        else:
            raise NotApplicable(f"{ctx.implementation} does not copy images")
    except ApplyRefused as exc:
        return {"error": exc.message, "original": original}
    return {**seen, "original": original}


@action("layers.stored")
def stored_layers(params: JsonDict, ctx: Context) -> JsonDict:
    """Store an image as the implementation stores images for overlay mounts; each layer directory's tree."""
    blobs = [LayerBlob(build_tar(entries), LAYER_TAR) for entries in params["layers"]]
    work = _fresh_dir(ctx, "work")
    try:
        if ctx.implementation == "ref":
            from conformance.ref.store import Store  # noqa: PLC0415

            store = Store(os.path.join(work, "conformance-store"), faults=_faults(ctx))
            ctx.sandbox.defer("remove the ref store", store.remove)
            image = store.unpack(write_layout(os.path.join(work, "layout"), blobs), TAG)
            dirs = [str(layer.path) for layer in image.layers]
        elif ctx.implementation == "docker":
            docker = DockerSession.load(ctx, blobs, work)
            dirs = _graph_driver_dirs(json.loads(docker.run("image", "inspect", "--format", "{{json .GraphDriver}}",
                                                            docker.image, what="docker image inspect")))
        elif ctx.implementation == "podman":
            podman = PodmanSession.pull(ctx, write_layout(os.path.join(work, "layout"), blobs), work)
            [inspected] = json.loads(podman.run("image", "inspect", podman.image_id, what="podman image inspect"))
            dirs = _graph_driver_dirs(inspected["GraphDriver"])
        else:
            raise NotApplicable(f"{ctx.implementation} keeps no per-layer directories for overlay mounts")
    except ApplyRefused as exc:
        return {"error": exc.message}
    return {"layers": [read_tree(path) for path in dirs], "dirs": dirs}


def _graph_driver_dirs(graph: JsonDict) -> list[str]:
    """Layer directories base first, from inspect's GraphDriver.

    For an image, UpperDir is the top layer's directory and LowerDir the others, top first.
    """
    if graph.get("Name") not in ("overlay2", "overlay"):
        raise NotApplicable(f"the storage driver is {graph.get('Name')!r}, not overlay")
    data = graph.get("Data") or {}
    lowers = [path for path in (data.get("LowerDir") or "").split(":") if path]
    return [*reversed(lowers), data["UpperDir"]]


def _apply_with_ref(blobs: list[LayerBlob], rootfs: str) -> None:
    """The oracle: the reference applies the layers, in order, onto an empty directory."""
    from conformance.ref.layers import apply_layer  # noqa: PLC0415

    os.makedirs(rootfs, mode=0o755)
    for n, blob in enumerate(blobs):
        apply_layer(rootfs, blob.data, media_type=blob.media_type, label=f"layer{n}")


def _layout_layers(path: str, ref: str | None) -> list[LayerBlob]:
    """The layer blobs of the image in an OCI layout, base first."""
    from conformance.ref.layout import Layout  # noqa: PLC0415

    layout = Layout(path)
    manifest = layout.manifest(layout.resolve(ref))
    return [LayerBlob(layout.read_blob(layer, limit=1 << 30), layer.media_type) for layer in manifest.layers]


def _archive_layers(path: str) -> list[LayerBlob]:
    """The layer tars of the image in a `docker save` archive, base first."""
    with tarfile.open(path) as archive:
        [entry] = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        return [LayerBlob(archive.extractfile(name).read(), LAYER_TAR)  # type: ignore[union-attr]
                for name in entry["Layers"]]


@action("layers.flatten")
def flatten(params: JsonDict, ctx: Context) -> JsonDict:
    """The filesystem the implementation gives a container of an image, and its own stored layers applied.

    Both trees come from the implementation: the container's view (an export, an unpack, a mounted
    overlay) and the layers it keeps or saves for that image, which the reference then applies in order.
    """
    blobs = [LayerBlob(build_tar(entries), LAYER_TAR) for entries in params["layers"]]
    work = _fresh_dir(ctx, "work")
    view = os.path.join(work, "view")
    layout = write_layout(os.path.join(work, "layout"), blobs)
    try:
        if ctx.implementation == "ref":  # the store's overlay mount against apply_image
            from conformance.ref.store import Store  # noqa: PLC0415

            store = Store(os.path.join(work, "conformance-store"), faults=_faults(ctx))
            ctx.sandbox.defer("remove the ref store", store.remove)
            container = store.create_container(store.unpack(layout, TAG), "flatten")
            view = str(store.mount(container))
            stored = _layout_layers(layout, TAG)
        elif ctx.implementation == "umoci":
            view = applier_for(ctx).apply(blobs, work)
            stored = _layout_layers(layout, TAG)
        elif ctx.implementation == "docker":
            docker = DockerSession.load(ctx, blobs, work)
            docker.run("save", "-o", os.path.join(work, "saved.tar"), docker.image, what="docker save")
            stored = _archive_layers(os.path.join(work, "saved.tar"))
            view = docker.rootfs(stored, view)
        elif ctx.implementation == "podman":
            podman = PodmanSession.pull(ctx, layout, work)
            podman.rootfs(view)
            pushed = os.path.join(work, "pushed")
            podman.run("push", "-q", podman.image_id, f"oci:{pushed}:{TAG}", what="podman push")
            stored = _layout_layers(pushed, TAG)
        else:
            raise NotApplicable(f"{ctx.implementation} gives containers no filesystem")
    except ApplyRefused as exc:
        return {"error": exc.message}
    if ctx.implementation == "podman":
        prune_engine_additions(view, stored)
    oracle = os.path.join(work, "oracle")
    _apply_with_ref(stored, oracle)
    return {"view": read_tree(view), "applied": read_tree(oracle), "layers": len(stored)}


def _normal(name: str) -> str:
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return "/".join(parts)


def _layer_entries(blob: LayerBlob) -> dict[str, JsonDict]:
    """A layer's entries as plain data: name -> type, mode, owner, content or link target."""
    data = blob.data
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    entries: dict[str, JsonDict] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            entry: JsonDict = {"type": "dir" if member.isdir() else "file" if member.isfile() else
                               "symlink" if member.issym() else "hardlink" if member.islnk() else "other",
                               "mode": member.mode & 0o7777, "uid": member.uid, "gid": member.gid}
            if member.isfile():
                handle = tar.extractfile(member)
                entry["content"] = handle.read().decode(errors="replace") if handle else ""
            elif member.issym() or member.islnk():
                entry["target"] = member.linkname
            entries[_normal(member.name)] = entry
    return entries


def _write_context(path: str, files: JsonDict) -> None:
    """The build context: path -> {content, mode} for a file, {tar: [entries]} for a tar to ADD."""
    os.makedirs(path)
    for name, spec in files.items():
        full = os.path.join(path, name)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as handle:
            handle.write(build_tar(spec["tar"]) if "tar" in spec else spec.get("content", "").encode())
        os.chmod(full, spec.get("mode", 0o644))


@action("layers.build")
def build(params: JsonDict, ctx: Context) -> JsonDict:
    """Build a Containerfile FROM a local base image as the implementation builds; the image's layers and history."""
    base = [LayerBlob(build_tar(entries), LAYER_TAR) for entries in params["base"]]
    work = _fresh_dir(ctx, "work")
    context = os.path.join(work, "context")
    _write_context(context, params["context"])
    try:
        if ctx.implementation == "ref":
            from conformance.ref.build import build_image  # noqa: PLC0415

            source = write_layout(os.path.join(work, "base"), base)
            with open(os.path.join(work, "Containerfile"), "w", encoding="utf-8") as handle:
                handle.write(params["containerfile"].replace("{base}", f"oci:{source}:{TAG}"))
            build_image(os.path.join(work, "Containerfile"), context, os.path.join(work, "built"), TAG,
                        faults=_faults(ctx))
            image = _image_parts(os.path.join(work, "built"), TAG)
        elif ctx.implementation == "docker":
            docker = DockerSession.load(ctx, base, work)
            built = f"{docker.name}-built:{TAG}"
            with open(os.path.join(context, "Dockerfile"), "w", encoding="utf-8") as handle:
                handle.write(params["containerfile"].replace("{base}", docker.image))
            ctx.sandbox.defer(f"docker rmi {built}", lambda: quiet([docker.client, "rmi", "-f", built], docker.env))
            run_tool([docker.client, "build", "-q", "--network", "none", "-t", built, context], what="docker build",
                     env={**docker.env, "DOCKER_BUILDKIT": "0"})  # the classic builder: BuildKit needs buildx here
            docker.run("save", "-o", os.path.join(work, "saved.tar"), built, what="docker save")
            image = _archive_parts(os.path.join(work, "saved.tar"))
        elif ctx.implementation == "podman":
            podman = PodmanSession.pull(ctx, write_layout(os.path.join(work, "base"), base), work)
            podman.run("tag", podman.image_id, f"localhost/conformance-base:{TAG}", what="podman tag")
            with open(os.path.join(context, "Containerfile"), "w", encoding="utf-8") as handle:
                handle.write(params["containerfile"].replace("{base}", f"localhost/conformance-base:{TAG}"))
            podman.run("build", "-q", "--pull=never", "--network", "none", "-t", f"localhost/conformance-built:{TAG}",
                       context, what="podman build")
            podman.run("push", "-q", f"localhost/conformance-built:{TAG}", f"oci:{work}/pushed:{TAG}",
                       what="podman push")
            image = _image_parts(os.path.join(work, "pushed"), TAG)
        else:
            raise NotApplicable(f"{ctx.implementation} does not build images from a Containerfile")
    except ApplyRefused as exc:
        return {"error": exc.message}
    return {**image, "base_layers": len(base)}


def _image_parts(path: str, ref: str) -> JsonDict:
    """Layers (as entries), DiffIDs and history of the image in an OCI layout."""
    from conformance.ref.layout import Layout  # noqa: PLC0415

    layout = Layout(path)
    manifest = layout.manifest(layout.resolve(ref))
    config = layout.config(manifest)
    layers = [_layer_entries(LayerBlob(layout.read_blob(layer, limit=1 << 30), layer.media_type))
              for layer in manifest.layers]
    history = [{"created_by": step.created_by, "empty_layer": step.empty_layer} for step in config.history]
    return {"layers": layers, "diff_ids": list(config.diff_ids), "history": history}


def _archive_parts(path: str) -> JsonDict:
    """Layers (as entries), DiffIDs and history of the image in a `docker save` archive."""
    with tarfile.open(path) as archive:
        [entry] = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        config = json.loads(archive.extractfile(entry["Config"]).read())  # type: ignore[union-attr]
        layers = [_layer_entries(LayerBlob(archive.extractfile(name).read(), LAYER_TAR))  # type: ignore[union-attr]
                  for name in entry["Layers"]]
    history = [{"created_by": step.get("created_by"), "empty_layer": bool(step.get("empty_layer"))}
               for step in config.get("history") or []]
    return {"layers": layers, "diff_ids": config["rootfs"]["diff_ids"], "history": history}


def _break_layout(layout_path: str, kind: str) -> None:
    """Break an image (TAG) in a layout as asked, keeping every digest right so only the asked flaw is there."""
    from conformance.ref.layout import Layout, write_layout  # noqa: PLC0415
    from conformance.ref.oci import CONFIG, MANIFEST, REF_NAME, Descriptor  # noqa: PLC0415

    layout = Layout(layout_path)
    [named] = layout.index().manifests
    manifest = json.loads(layout.blob_path(named.digest).read_bytes())
    if kind == "missing-layer":
        os.unlink(layout.blob_path(manifest["layers"][0]["digest"]))
        return
    if kind == "config-not-json":
        config = layout.add_blob(b'{"rootfs": {"type": "layers", "diff_ids": [', CONFIG)
        manifest["config"] = {"mediaType": CONFIG, "digest": config.digest, "size": config.size}
        written = layout.add_blob(json.dumps(manifest).encode(), MANIFEST)
    else:  # manifest-not-json
        written = layout.add_blob(b'{"schemaVersion": 2, "layers": [', MANIFEST)
    write_layout(layout_path, [Descriptor(MANIFEST, written.digest, written.size, {REF_NAME: TAG})])


def _break_archive(path: str, kind: str) -> None:
    """The same flaws in a docker-archive: manifest.json or the config not JSON, or the layer member gone."""
    with tarfile.open(path) as archive:
        members = [(info, archive.extractfile(info).read() if info.isfile() else b"")  # type: ignore[union-attr]
                   for info in archive]
    [entry] = json.loads(next(data for info, data in members if info.name == "manifest.json"))
    replaced = {"manifest-not-json": ("manifest.json", b'[{"Config": '), "config-not-json": (entry["Config"], b"{")}
    with tarfile.open(path, "w") as archive:
        for info, data in members:
            if kind == "missing-layer" and info.name == entry["Layers"][0]:
                continue
            written = replaced[kind][1] if kind in replaced and info.name == replaced[kind][0] else data
            info.size = len(written)
            archive.addfile(info, io.BytesIO(written))


@action("layers.broken")
def broken_image(params: JsonDict, ctx: Context) -> JsonDict:
    """An image with one flaw ("manifest-not-json", "config-not-json", "missing-layer"; "none": control)."""
    kind = params["kind"]
    if ctx.implementation == "skopeo":  # copying needs no config parsed: the clause is about unpacking
        raise NotApplicable("skopeo copies images without unpacking them, and a copier need not read the config")
    blobs = [LayerBlob(build_tar([{"name": "payload", "type": "file", "content": "x"}]), LAYER_TAR)]
    work = _fresh_dir(ctx, "work")
    if ctx.implementation == "docker":
        from conformance.probe.appliers import docker_cli, write_docker_archive  # noqa: PLC0415

        client, env = docker_cli()
        name = f"{os.path.basename(ctx.sandbox.root).lower()}-{os.urandom(2).hex()}:{TAG}"
        archive = write_docker_archive(os.path.join(work, "image.tar"), blobs, name)
        if kind != "none":
            _break_archive(archive, kind)
        ctx.sandbox.defer(f"docker rmi {name}", lambda: quiet([client, "rmi", "-f", name], env))
        try:
            run_tool([client, "load", "-i", archive], what="docker load", env=env)
        except ApplyRefused as exc:
            return {"read": False, "error": exc.message}
        return {"read": True}
    layout = write_layout(os.path.join(work, "layout"), blobs)
    if kind != "none":
        _break_layout(layout, kind)
    if ctx.implementation == "ref":
        from conformance.ref.image import apply_image as ref_apply_image  # noqa: PLC0415
        from conformance.ref.layers import ApplyOptions  # noqa: PLC0415

        rootfs = _fresh_dir(ctx, "rootfs")
        try:
            ref_apply_image(layout, TAG, rootfs, options=ApplyOptions(faults=_faults(ctx)))
        except Exception as exc:
            return {"read": False, **_error(exc)}
        return {"read": True}
    try:
        reader_for(ctx).read(layout, _fresh_dir(ctx, "read"))
    except ApplyRefused as exc:
        return {"read": False, "error": exc.message}
    return {"read": True}
