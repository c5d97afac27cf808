"""Test helpers: build trees from plain data, snapshot trees, and write small tars by hand.

The snapshot is written here, not taken from conformance.ref.diff, so the tests do not grade the
reference implementation with its own eyes.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = os.geteuid() == 0

# Tree specs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class File:
    content: bytes = b""
    mode: int = 0o644
    mtime: int = 1_000_000_000
    owner: tuple[int, int] = (0, 0)
    xattr: bytes | None = None


@dataclass(frozen=True)
class Link:
    target: str
    mtime: int = 1_000_000_000
    owner: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Hard:
    """A hardlink to the sibling file `target` (an empty file when there is no such sibling file)."""

    target: str


@dataclass(frozen=True)
class Dir:
    children: Mapping[str, Node] = field(default_factory=dict)
    mode: int = 0o755
    mtime: int = 1_000_000_000
    owner: tuple[int, int] = (0, 0)
    xattr: bytes | None = None


Node = File | Link | Hard | Dir


def build(root: Path, tree: Dir, *, reverse: bool = False) -> None:
    """Create `tree` under `root` (which must exist): content, modes, owners (when root), xattrs, times."""
    names = sorted(tree.children, reverse=reverse)
    for name in sorted(names, key=lambda n: isinstance(tree.children[n], Hard)):  # link targets first
        node = tree.children[name]
        path = root / name
        if isinstance(node, Hard):
            if isinstance(tree.children.get(node.target), File):
                os.link(root / node.target, path)
            else:
                path.write_bytes(b"")
                os.utime(path, ns=(10**18, 10**18))
        elif isinstance(node, File):
            path.write_bytes(node.content)
            _attrs(path, node.mode, node.owner, node.xattr)
            os.utime(path, ns=(node.mtime * 10**9, node.mtime * 10**9))
        elif isinstance(node, Link):
            os.symlink(node.target, path)
            if ROOT:
                os.lchown(path, *node.owner)
            os.utime(path, ns=(node.mtime * 10**9, node.mtime * 10**9), follow_symlinks=False)
        else:
            path.mkdir()
            build(path, node, reverse=reverse)
    _attrs(root, tree.mode, tree.owner, tree.xattr)
    os.utime(root, ns=(tree.mtime * 10**9, tree.mtime * 10**9))


def _attrs(path: Path, mode: int, owner: tuple[int, int], xattr: bytes | None) -> None:
    if ROOT:
        os.chown(path, *owner)
    if xattr is not None:
        os.setxattr(path, "user.conformance", xattr)
    os.chmod(path, mode)


# Snapshots -------------------------------------------------------------------------------------------


def snapshot(root: Path, *, include_root: bool = False, nlink: bool = False,
             exclude: Iterable[str] = ()) -> dict[str, tuple[object, ...]]:
    """Everything a layer can say about each path under `root`: type, mode, owner, mtime (ns), content
    hash / symlink target / device number, xattrs, and which other paths share its inode."""
    skip = set(exclude)
    found: dict[str, tuple[object, ...]] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    paths = [(".", str(root))] if include_root else []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.relpath(os.path.join(dirpath, d), root) not in skip]
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            paths.append((os.path.relpath(full, root), full))
    for rel, full in paths:
        info = os.lstat(full)
        kind = stat.S_IFMT(info.st_mode)
        if stat.S_ISREG(info.st_mode):
            data: object = hashlib.sha256(Path(full).read_bytes()).hexdigest()
        elif stat.S_ISLNK(info.st_mode):
            data = os.readlink(full)
        elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
            data = (os.major(info.st_rdev), os.minor(info.st_rdev))
        else:
            data = None
        xattrs = tuple(sorted((n, os.getxattr(full, n, follow_symlinks=False))
                              for n in os.listxattr(full, follow_symlinks=False)))
        found[rel] = (kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_mtime_ns, data, xattrs,
                      info.st_nlink if nlink else None)
        if not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1:
            inodes.setdefault((info.st_dev, info.st_ino), []).append(rel)
    for group in inodes.values():
        for rel in group:
            found[rel] = (*found[rel], tuple(sorted(group)))
    return found


def inodes(root: Path) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of everything under root, to prove no inode is shared with a sentinel."""
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            info = os.lstat(os.path.join(dirpath, name))
            seen.add((info.st_dev, info.st_ino))
    return seen


# Hand-made tars ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    linkname: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 1_000_000_000
    device: tuple[int, int] = (0, 0)
    pax: Mapping[str, str] = field(default_factory=dict)


def file(name: str, data: bytes = b"", **kw: object) -> Entry:
    return Entry(name, tarfile.REGTYPE, data, **kw)  # type: ignore[arg-type]


def directory(name: str, **kw: object) -> Entry:
    return Entry(name, tarfile.DIRTYPE, **{"mode": 0o755, **kw})  # type: ignore[arg-type]


def symlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, linkname=target, mode=0o777)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, linkname=target)


def chardev(name: str, major: int = 1, minor: int = 3) -> Entry:
    return Entry(name, tarfile.CHRTYPE, device=(major, minor), mode=0o666)


def whiteout(name: str) -> Entry:
    return Entry(name, tarfile.REGTYPE, mode=0o600)


def make_tar(*entries: Entry) -> bytes:
    """A PAX tar of exactly these entries, in this order (names are written as given)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.type
            info.mode = entry.mode
            info.uid, info.gid = entry.uid, entry.gid
            info.mtime = entry.mtime
            info.linkname = entry.linkname
            info.devmajor, info.devminor = entry.device
            info.pax_headers = dict(entry.pax)
            info.size = len(entry.data)
            tar.addfile(info, io.BytesIO(entry.data) if entry.data else None)
    return buffer.getvalue()
