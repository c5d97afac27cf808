"""The hostile layer corpus: each case builds its tars (research/overlay_layers.md § 3, H-numbers).

A case is a list of layers applied in order; the last one must be refused with an error that contains
`expect` and names `entry`. Many cases point at the sentinel by its absolute path, so that a broken
applier would hit the sentinel (and be caught) rather than the host's /etc.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trees import Entry, chardev, directory, file, hardlink, make_tar, symlink, whiteout

from conformance.ref.oci import LAYER_GZIP, LAYER_TAR


@dataclass(frozen=True)
class Case:
    hazard: str
    layers: tuple[bytes, ...]
    expect: str
    entry: str | None
    media_type: str = LAYER_TAR
    options: dict[str, Any] = field(default_factory=dict)


def _one(hazard: str, expect: str, entry: str | None, *entries: Entry, before: tuple[Entry, ...] = (),
         **options: Any) -> Case:
    layers = (make_tar(*before),) if before else ()
    return Case(hazard, (*layers, make_tar(*entries)), expect, entry, options=options)


def _rel(sentinel: Path) -> str:
    """The sentinel's absolute path without its leading slash (to put under a symlink to /)."""
    return str(sentinel).lstrip("/")


BUILDERS: dict[str, Callable[[Path], Case]] = {
    # H-1: names climbing out
    "dotdot": lambda s: _one("H-1", "path escapes the rootfs", "../sentinel/victim",
                             file("../sentinel/victim", b"owned")),
    "dotdot-nested": lambda s: _one("H-1", "path escapes the rootfs", "a/../../sentinel/victim",
                                    directory("a"), file("a/../../sentinel/victim", b"owned")),
    "dotdot-new-file": lambda s: _one("H-1", "path escapes the rootfs", "./../planted",
                                      file("./../planted", b"owned")),
    # H-3: a symlink, then a write through it
    "symlink-to-root-then-write": lambda s: _one(
        "H-3", "absolute symlink", f"a/{_rel(s)}/victim",
        symlink("a", "/"), file(f"a/{_rel(s)}/victim", b"owned")),
    "symlink-absolute-then-write": lambda s: _one(
        "H-3", "absolute symlink", "a/victim", symlink("a", str(s)), file("a/victim", b"owned")),
    "symlink-up-then-write": lambda s: _one(
        "H-3", "escapes the rootfs", "a/victim", symlink("a", "../sentinel"), file("a/victim", b"owned")),
    "symlink-dotdot-dotdot-then-write": lambda s: _one(
        "H-3", "escapes the rootfs", "d/a/sentinel/victim", directory("d"), symlink("d/a", "../.."),
        file("d/a/sentinel/victim", b"owned")),
    "symlink-chain-then-write": lambda s: _one(
        "H-3", "escapes the rootfs", "a/victim", symlink("a", "b"), symlink("b", "c/../../sentinel"),
        directory("c"), file("a/victim", b"owned")),
    "symlink-then-mkdir-through-it": lambda s: _one(
        "H-3", "absolute symlink", "a/new", symlink("a", str(s)), directory("a/new")),
    # H-18: a symlink replaces a lower directory, then the layer writes into it
    "symlink-replaces-directory": lambda s: _one(
        "H-18", "absolute symlink", "etc/victim", symlink("etc", str(s)), file("etc/victim", b"owned"),
        before=(directory("etc"), file("etc/hosts", b"x"))),
    "symlink-empty-target": lambda s: _one("H-7", "symlink with an empty target", "a", symlink("a", "")),
    # H-19
    "symlink-loop": lambda s: _one("H-19", "too many levels of symbolic links", "a/x",
                                   symlink("a", "b"), symlink("b", "a"), file("a/x")),
    # H-4, H-5: hardlinks out, or through a symlink, or to a directory
    "hardlink-to-etc-passwd": lambda s: _one("H-4", "does not exist in the rootfs", "x",
                                             hardlink("x", "/etc/passwd")),
    "hardlink-to-sentinel-absolute": lambda s: _one("H-4", "does not exist in the rootfs", "x",
                                                    hardlink("x", f"{s}/victim")),
    "hardlink-dotdot": lambda s: _one("H-4", "escapes the rootfs", "x", hardlink("x", "../sentinel/victim")),
    "hardlink-through-absolute-symlink": lambda s: _one(
        "H-5", "absolute symlink", "x", symlink("a", str(s)), hardlink("x", "a/victim")),
    "hardlink-through-escaping-symlink": lambda s: _one(
        "H-5", "escapes the rootfs", "x", symlink("a", "../sentinel"), hardlink("x", "a/victim")),
    "hardlink-to-directory": lambda s: _one("H-4", "is a directory", "x", directory("d"), hardlink("x", "d")),
    "hardlink-before-target": lambda s: _one("H-27", "does not exist in the rootfs", "x",
                                             hardlink("x", "later"), file("later", b"data")),
    # H-6: the root replaced
    "root-as-symlink": lambda s: _one("H-6", "can only be a directory", "./", symlink("./", str(s))),
    "root-as-file": lambda s: _one("H-6", "can only be a directory", ".", file(".", b"x")),
    "empty-name": lambda s: _one("H-7", "can only be a directory", "", file("", b"x")),
    # H-9, H-10, H-11, H-12: whiteouts
    "whiteout-bare": lambda s: _one("H-9", "whiteout names nothing", ".wh.", whiteout(".wh.")),
    "whiteout-dot": lambda s: _one("H-9", "whiteout names '.'", ".wh..", whiteout(".wh..")),
    "whiteout-dotdot": lambda s: _one("H-9", "whiteout names '..'", ".wh...", whiteout(".wh...")),
    "whiteout-dotdot-in-dir": lambda s: _one("H-9", "whiteout names '..'", "etc/.wh...",
                                             directory("etc"), whiteout("etc/.wh...")),
    "whiteout-dot-in-dir": lambda s: _one("H-9", "whiteout names '.'", "etc/.wh..",
                                          directory("etc"), whiteout("etc/.wh..")),
    "whiteout-climbing-name": lambda s: _one("H-1", "path escapes the rootfs", "../sentinel/.wh.victim",
                                             whiteout("../sentinel/.wh.victim")),
    "whiteout-through-absolute-symlink": lambda s: _one(
        "H-10", "absolute symlink", "a/.wh.victim", symlink("a", str(s)), whiteout("a/.wh.victim")),
    "whiteout-through-escaping-symlink": lambda s: _one(
        "H-10", "escapes the rootfs", "a/.wh.victim", symlink("a", "../sentinel"), whiteout("a/.wh.victim")),
    "opaque-through-absolute-symlink": lambda s: _one(
        "H-10", "absolute symlink", "a/.wh..wh..opq", symlink("a", str(s)), whiteout("a/.wh..wh..opq")),
    "opaque-through-lower-symlink": lambda s: _one(
        "H-10", "escapes the rootfs", "a/.wh..wh..opq", whiteout("a/.wh..wh..opq"),
        before=(symlink("a", "../sentinel"),)),
    "whiteout-as-directory": lambda s: _one("H-11", "whiteout name", ".wh.etc/passwd",
                                            file(".wh.etc/passwd", b"x")),
    "whiteout-as-symlink": lambda s: _one("H-11", "must be a regular file", ".wh.x",
                                          symlink(".wh.x", str(s))),
    "aufs-metadata": lambda s: _one("H-12", "AUFS", ".wh..wh.aufs", whiteout(".wh..wh.aufs")),
    # H-13, H-14
    "duplicate-entry": lambda s: _one("H-13", "twice", "a", file("a", b"1"), file("a", b"2")),
    "file-then-child": lambda s: _one("H-14", "is not a directory", "a/b", file("a", b"x"), file("a/b", b"y")),
    "dir-then-replaced-by-file": lambda s: _one("H-13", "already wrote into", "d", file("d/x"), file("d")),
    # H-17: devices, when the policy says no
    "device-refused": lambda s: _one("H-17", "refused by the devices policy", "dev/mem",
                                     chardev("dev/mem", 1, 1), devices="refuse"),
    # H-21: bombs
    "too-many-entries": lambda s: _one("H-21", "more than 3 entries", "d", *[file(f"f{n}") for n in range(3)],
                                       directory("d"), max_entries=3),
    "pax-bomb": lambda s: _one("H-21", "metadata", None,
                               Entry("big", pax={"SCHILY.xattr.user.big": "x" * (3 << 20)}), max_metadata=1 << 20),
    "sparse-bomb": lambda s: Case("H-21", (_sparse_bomb(),), "claims 1073741824, sparse", "sparse", LAYER_TAR,
                                  {"max_bytes": 64 << 20}),
    "gzip-bomb": lambda s: Case("H-21", (gzip.compress(make_tar(file("zeros", bytes(64 << 20))), mtime=0),),
                                "passes the limit", None, LAYER_GZIP, {"max_bytes": 16 << 20}),
    # H-20: truncation
    "truncated-gzip": lambda s: Case("H-20", (_truncated_gzip(),), "truncated gzip", None, LAYER_GZIP),
    "truncated-tar-data": lambda s: Case("H-20", (make_tar(file("a", b"x" * 5000))[:2048],), "truncated", "a"),
    "truncated-tar-header": lambda s: Case("H-20", (make_tar(file("a", b"x"), file("b", b"y"))[:1024 + 300],),
                                           "truncated", "a"),
    "corrupt-second-header": lambda s: Case("H-20", (_corrupt_second_header(),), "corrupt tar header", "a"),
    "not-gzip": lambda s: Case("H-20", (b"this is not gzip at all" * 10,), "corrupt gzip", None, LAYER_GZIP),
}

#: Cases where the layer is acceptable once contained: the applier must keep it inside the rootfs.
CONTAINED: dict[str, Callable[[Path], tuple[bytes, str]]] = {
    # H-2: an absolute name is relative to the rootfs (tar strips the leading slash)
    "absolute-name": lambda s: (make_tar(file(f"{s}/victim", b"contained")), f"{_rel(s)}/victim"),
    # H-4: an absolute hardlink target names a file inside the rootfs
    "hardlink-absolute-inside": lambda s: (make_tar(directory("etc"), file("etc/passwd", b"root:x:0:0\n"),
                                                    hardlink("localpasswd", "/etc/passwd")), "localpasswd"),
    # H-1: `..` that stays inside is just a path
    "dotdot-inside": lambda s: (make_tar(directory("a"), file("a/../b", b"contained")), "b"),
    # absolute symlinks are data: creating one is fine, only following it is not
    "absolute-symlink-is-data": lambda s: (make_tar(symlink("escape", str(s / "victim"))), "escape"),
    # relative symlinks that stay inside are followed (lib -> usr/lib), like go-archive's os.Root
    "relative-symlink-inside": lambda s: (make_tar(directory("usr"), directory("usr/lib"), symlink("lib", "usr/lib"),
                                                   file("lib/libc.so", b"elf")), "usr/lib/libc.so"),
}


def _sparse_bomb() -> bytes:
    """A 10 KiB tar whose one PAX-sparse entry (GNU.sparse 0.1) claims a 1 GiB file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("sparse")
        info.size = 1
        info.pax_headers = {"GNU.sparse.size": str(1 << 30), "GNU.sparse.map": f"{(1 << 30) - 1},1",
                            "GNU.sparse.numblocks": "1"}
        tar.addfile(info, io.BytesIO(b"x"))
    return buffer.getvalue()


def _truncated_gzip() -> bytes:
    data = gzip.compress(make_tar(file("a", bytes(range(256)) * 200)), mtime=0)
    return data[: len(data) // 2]


def _corrupt_second_header() -> bytes:
    data = bytearray(make_tar(file("a", b"x"), file("b", b"y")))
    second = 1024  # a's header, a's one data block, then b's header
    assert data[second:second + 1] == b"b"
    data[second + 148: second + 156] = b"0000000\x00"  # a wrong checksum
    return bytes(data)


def build(name: str, sentinel: Path) -> Case:
    return BUILDERS[name](sentinel)


def layer_members(layer: bytes) -> list[str]:
    """Names in a (plain) tar, for debugging a case."""
    return [m.name for m in tarfile.open(fileobj=io.BytesIO(layer))]
