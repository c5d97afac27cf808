"""Hostile layers against any applier: build the case's bytes, apply them beside a sentinel, look around.

The oracle is moby's testBreakout made stricter (research/overlay_layers.md § 3): before applying, a
sentinel tree sits next to the rootfs (a victim file with random bytes and an xattr, a read-only file,
a subdirectory); afterwards everything the applier was not meant to touch is compared with how it was
(type, content, mode, owner, mtime, xattrs, link count, no new names), and no inode in the rootfs may
be the sentinel's or the host's /etc/passwd (a hardlink out would share it). Two outcomes are safe:
refused (an error) or contained (applied, nothing outside changed); which one, the report says.

What is watched is the scenario's work dir minus the rootfs and the files the applier itself makes
there (TOOL_PATHS). docker and podman apply inside their own storage, so a relative climb out of
*their* layer dir lands where no probe can snapshot it; absolute targets (`{sentinel}`) still point
at the sentinel, so those escapes are caught for every applier.

Faulty variants come from the applier: appliers.ref_faults maps ctx.fault through
layer_checks.FAULT_BEHAVIOURS, the one clause -> behaviour table of the layers area.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable, Mapping
from typing import Any

from conformance.probe.actions import Context, NotApplicable, action
from conformance.probe.appliers import ApplyRefused, LayerBlob, applier_for
from conformance.ref.oci import LAYER_TAR

JsonDict = dict[str, Any]

MTIME = 1_000_000_000  # every entry's mtime (the ref tests' trees use the same)
SENTINEL_PLACEHOLDER = "{sentinel}"
MAX_NAMES = 20  # rootfs names listed in an observation: enough to see what a partial apply left

#: Where each applier puts its rootfs and what else it writes in the work dir (globs relative to it;
#: "x/**" is x and everything below). Anything else that appears or changes there is an escape.
ROOTFS_AT: dict[str, str] = {"ref": "rootfs", "umoci": "bundle/rootfs", "docker": "rootfs", "podman": "rootfs"}
TOOL_PATHS: dict[str, tuple[str, ...]] = {
    "ref": ("rootfs/**",),
    "umoci": ("layout/**", "bundle", "bundle/rootfs/**", "bundle/config.json", "bundle/umoci.json",
              "bundle/sha256_*.mtree"),
    "docker": ("image.tar", "rootfs/**"),
    "podman": ("layout/**", "podman/**", "rootfs/**"),
}


# Bytes ---------------------------------------------------------------------------------------------------


def build_tar(entries: list[JsonDict]) -> bytes:
    """A PAX tar of exactly these entries, in this order, names written as given.

    Entries are layer_checks' dicts ({name, type: file|dir|symlink|hardlink, content, mode, uid, gid,
    target}) plus type "chardev" (major, minor) and an optional "pax" dict of extended header records.
    """
    kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE, "chardev": tarfile.CHRTYPE}
    default_modes = {"dir": 0o755, "symlink": 0o777, "chardev": 0o666}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            kind = entry.get("type", "file")
            data = entry.get("content", "").encode() if kind == "file" else b""
            info = tarfile.TarInfo(entry["name"])
            info.type = kinds[kind]
            info.mode = entry.get("mode", default_modes.get(kind, 0o644))
            info.uid, info.gid = entry.get("uid", 0), entry.get("gid", 0)
            info.mtime = MTIME
            info.linkname = entry.get("target", "")
            info.devmajor, info.devminor = entry.get("major", 0), entry.get("minor", 0)
            info.pax_headers = dict(entry.get("pax", {}))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def _sparse_bomb() -> bytes:
    """A 10 KiB tar whose one PAX-sparse entry (GNU.sparse 0.1) claims a 1 GiB file."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("sparse")
        info.size = 1
        info.mtime = MTIME
        info.pax_headers = {"GNU.sparse.size": str(1 << 30), "GNU.sparse.map": f"{(1 << 30) - 1},1",
                            "GNU.sparse.numblocks": "1"}
        tar.addfile(info, io.BytesIO(b"x"))
    return out.getvalue()


def _pax_bomb() -> bytes:
    """One entry whose PAX header carries a 3 MiB xattr: metadata a reader must hold in memory at once."""
    return build_tar([{"name": "big", "pax": {"SCHILY.xattr.user.big": "x" * (3 << 20)}}])


def _gzip_bomb() -> bytes:
    """64 MiB of zeros in a tar, gzipped to about 64 KiB: a thousandfold expansion."""
    return gzip.compress(build_tar([{"name": "zeros", "content": "\0" * (64 << 20)}]), mtime=0)


def _truncated_gzip() -> bytes:
    """The first half of a gzipped tar: the stream ends before its end marker and CRC."""
    data = gzip.compress(build_tar([{"name": "a", "content": "".join(map(chr, range(128))) * 400}]), mtime=0)
    return data[: len(data) // 2]


def _truncated_tar_data() -> bytes:
    """A tar cut inside its one entry's data: the header claims 5000 bytes, 1536 follow."""
    return build_tar([{"name": "a", "content": "x" * 5000}])[:2048]


def _truncated_tar_header() -> bytes:
    """A tar cut 300 bytes into its second header (after a whole first entry)."""
    return build_tar([{"name": "a", "content": "x"}, {"name": "b", "content": "y"}])[:1024 + 300]


def _corrupt_second_header() -> bytes:
    """Two entries; the second header's checksum is wrong (Python's tarfile takes that for the end)."""
    data = bytearray(build_tar([{"name": "a", "content": "x"}, {"name": "b", "content": "y"}]))
    second = 1024  # a's header, a's one data block, then b's header
    if data[second:second + 1] != b"b":
        raise AssertionError("the second header is not where the recipe expects it")
    data[second + 148: second + 156] = b"0000000\x00"  # a wrong checksum
    return bytes(data)


def _not_gzip() -> bytes:
    """Text under a gzip media type."""
    return b"this is not gzip at all" * 10


#: Byte recipes by name: inputs an entry list cannot describe.
RECIPES: dict[str, Callable[[], bytes]] = {
    "sparse-bomb": _sparse_bomb,
    "pax-bomb": _pax_bomb,
    "gzip-bomb": _gzip_bomb,
    "truncated-gzip": _truncated_gzip,
    "truncated-tar-data": _truncated_tar_data,
    "truncated-tar-header": _truncated_tar_header,
    "corrupt-second-header": _corrupt_second_header,
    "not-gzip": _not_gzip,
}


def _placed(value: Any, sentinel: str) -> Any:
    return value.replace(SENTINEL_PLACEHOLDER, sentinel) if isinstance(value, str) else value


def build_layers(params: Mapping[str, Any], sentinel: str) -> list[LayerBlob]:
    """The case's blobs, base first, with {sentinel} replaced; only the last layer has the case's media type."""
    layers = params["layers"]
    blobs = []
    for n, layer in enumerate(layers):
        if isinstance(layer, dict):
            data = RECIPES[layer["recipe"]]()
        else:
            data = build_tar([{key: _placed(value, sentinel) for key, value in entry.items()} for entry in layer])
        media_type = params.get("media_type", LAYER_TAR) if n == len(layers) - 1 else LAYER_TAR
        blobs.append(LayerBlob(data, media_type))
    return blobs


# Looking ---------------------------------------------------------------------------------------------------


def make_sentinel(path: str) -> None:
    """The tree no apply may touch: random content and an xattr, a read-only file, a subdirectory."""
    os.makedirs(os.path.join(path, "sub"))
    with open(os.path.join(path, "victim"), "wb") as handle:
        handle.write(os.urandom(64))
    with open(os.path.join(path, "readonly"), "w", encoding="utf-8") as handle:
        handle.write("read only\n")
    os.chmod(os.path.join(path, "readonly"), 0o400)
    with open(os.path.join(path, "sub", "deep"), "w", encoding="utf-8") as handle:
        handle.write("deep\n")
    with contextlib.suppress(OSError):  # tmpfs before Linux 6.6 has no user xattrs: the rest still counts
        os.setxattr(os.path.join(path, "victim"), "user.conformance", b"sentinel")


def _tool_made(rel: str, globs: tuple[str, ...]) -> bool:
    for pattern in globs:
        if pattern.endswith("/**"):
            top = pattern[:-3]
            if rel == top or fnmatch.fnmatchcase(rel, top) or rel.startswith(top + "/"):
                return True
        elif fnmatch.fnmatchcase(rel, pattern):
            return True
    return False


def snapshot(base: str, skip: tuple[str, ...] = ()) -> dict[str, tuple[Any, ...]]:
    """Path (relative to base) -> everything a layer could change about it; paths matching skip are left out."""
    found: dict[str, tuple[Any, ...]] = {}
    for directory, dirs, files in os.walk(base):
        rel_dir = os.path.relpath(directory, base)
        dirs[:] = [d for d in dirs if not _subtree(os.path.normpath(os.path.join(rel_dir, d)), skip)]
        for name in sorted(dirs + files):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if _tool_made(rel, skip):
                continue
            found[rel] = _describe(os.path.join(directory, name))
    return found


def _subtree(rel: str, globs: tuple[str, ...]) -> bool:
    """Whether rel is (inside) a whole subtree the tool owns, so os.walk need not go in."""
    return any(p.endswith("/**") and (rel == p[:-3] or rel.startswith(p[:-3] + "/")
                                      or fnmatch.fnmatchcase(rel, p[:-3])) for p in globs)


def _describe(path: str) -> tuple[Any, ...]:
    info = os.lstat(path)
    data: Any = None
    if stat.S_ISREG(info.st_mode):
        with open(path, "rb") as handle:
            data = hashlib.sha256(handle.read()).hexdigest()
    elif stat.S_ISLNK(info.st_mode):
        data = os.readlink(path)
    elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
        data = [os.major(info.st_rdev), os.minor(info.st_rdev)]
    try:
        xattrs = sorted((n, os.getxattr(path, n, follow_symlinks=False).hex())
                        for n in os.listxattr(path, follow_symlinks=False))
    except OSError:
        xattrs = []
    return (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_mtime_ns,
            data, tuple(xattrs), None if stat.S_ISDIR(info.st_mode) else info.st_nlink)


FIELDS = ("type", "mode", "owner", "group", "mtime", "content", "xattrs", "nlink")


def changes(before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]]) -> list[str]:
    """What differs, one line a path: 'x: created', 'x: deleted', 'x: content, nlink changed'."""
    lines = []
    for rel in sorted(set(before) | set(after)):
        if rel not in before:
            lines.append(f"{rel}: created")
        elif rel not in after:
            lines.append(f"{rel}: deleted")
        elif before[rel] != after[rel]:
            fields = [name for name, old, new in zip(FIELDS, before[rel], after[rel], strict=True) if old != new]
            lines.append(f"{rel}: {', '.join(fields)} changed")
    return lines


def _inodes(root: str) -> set[tuple[int, int]]:
    seen = set()
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            info = os.lstat(os.path.join(directory, name))
            seen.add((info.st_dev, info.st_ino))
    return seen


def _control(applier: Any, ctx: Context) -> None:
    """A refusal only counts when the tool takes a benign layer: else it is a broken setup, not a verdict."""
    control = ctx.sandbox.path("control")
    os.mkdir(control, 0o755)
    try:
        applier.apply([LayerBlob(build_tar([{"name": "benign", "type": "file", "content": "ok"}]), LAYER_TAR)],
                      control)
    except ApplyRefused as exc:
        raise RuntimeError(f"{applier.name} refuses even a benign one-file layer, so its refusals say nothing: "
                           f"{exc.message}") from exc


def _shared_inodes(rootfs: str, sentinel: str) -> list[str]:
    """Outside files whose inode the rootfs holds (a hardlink out): the sentinel's, and /etc/passwd."""
    if not os.path.isdir(rootfs) or os.path.islink(rootfs):
        return []
    inside = _inodes(rootfs)
    outside = {(info.st_dev, info.st_ino): path for path in [*_files(sentinel), "/etc/passwd"]
               if os.path.lexists(path) for info in [os.lstat(path)]}
    return sorted(f"the rootfs shares the inode of {outside[key]}" for key in inside & set(outside))


def _files(root: str) -> list[str]:
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names]


def _top_names(rootfs: str) -> list[str]:
    if not os.path.isdir(rootfs) or os.path.islink(rootfs):
        return []
    return sorted(os.listdir(rootfs))[:MAX_NAMES]


@action("hostile.apply")
def apply_hostile(params: JsonDict, ctx: Context) -> JsonDict:
    """Apply one corpus case with ctx.implementation's applier next to a sentinel; say who did what."""
    if params.get("ref_only") and ctx.implementation != "ref":
        knobs = ", ".join(f"{k}={v}" for k, v in sorted(params.get("options", {}).items()))
        raise NotApplicable(f"case {params['case']} checks a knob only the reference has ({knobs})")
    applier = applier_for(ctx, params.get("options", {}))
    work = ctx.sandbox.path("w")
    os.mkdir(work, 0o755)
    # Beside the reference's rootfs (work/rootfs), so that `../sentinel` from the rootfs is the sentinel.
    sentinel = os.path.join(work, "sentinel")
    make_sentinel(sentinel)
    blobs = build_layers(params, sentinel)
    skip = TOOL_PATHS.get(applier.name, ())
    before = snapshot(work, skip)
    result: JsonDict = {"outcome": None, "error": None, "failed_layer": None}
    rootfs = os.path.join(work, ROOTFS_AT.get(applier.name, "rootfs"))
    try:
        rootfs = applier.apply(blobs, work)
    except ApplyRefused as refused:
        result.update(outcome="refused", error=refused.message, failed_layer=refused.layer)
    diff = changes(before, snapshot(work, skip))
    if result["outcome"] == "refused" and applier.name != "ref":
        _control(applier, ctx)
    sentinel_diff = [line for line in diff if line.startswith("sentinel/") or line.startswith("sentinel:")]
    escaped = [line for line in diff if line not in sentinel_diff]
    if os.path.islink(rootfs):
        escaped.append(f"the rootfs itself is a symlink to {os.readlink(rootfs)}")
    escaped += _shared_inodes(rootfs, sentinel)
    if result["outcome"] is None:
        if sentinel_diff or escaped:
            result["outcome"] = "escaped"
        else:
            result["outcome"] = "accepted" if params.get("must_refuse") else "contained"
    path = params.get("path")
    inside = None if path is None else os.path.lexists(os.path.join(rootfs, _placed(path, sentinel).lstrip("/")))
    result.update(sentinel_changed=bool(sentinel_diff), sentinel_diff=sentinel_diff, escaped=escaped,
                  rootfs_names=_top_names(rootfs), applier=applier.name, path_inside=inside)
    return result
