"""Compute the OCI layer that turns one tree into another (image-spec layer.md § Creating).

`write_diff(lower, upper, out)` walks both trees and writes one layer tar:

- entries new in `upper`, or changed: type, content, mode, uid/gid, mtime (whole seconds: the
  granularity of a plain tar header, so equal trees give equal layers), symlink target, device
  number, xattrs, or which paths share a hardlinked inode;
- the parent directories of everything emitted (with their `upper` attributes), as containerd's and
  moby's diffs do, so a layer applied onto another base still gets its directories' modes right and
  directory mtimes survive the apply;
- deletions as `.wh.<name>` for the topmost deleted path only; a directory whose lower children went
  in bulk (`rm -rf d && mkdir d`) as one `d/.wh..wh..opq` instead, when that makes a smaller layer
  (layer.md: generators SHOULD use explicit whiteouts, so explicit wins a tie; and never the rootfs
  itself, which would hide whatever base the layer is put on);
- hardlinks within the layer as tar hardlinks; a group of hardlinked paths is emitted whole when any
  of them changes, so the layer never links to a file outside itself (layer.md § Hardlinks).

Deterministic by construction: entries in byte order, depth first (a directory, then its opaque
marker, its whiteouts, its children), PAX format, no user or group names, fixed whiteout headers,
so the same trees give the same digest (config.md: DiffIDs SHOULD be reproducible).
Neither tree is modified (layer.md MUST NOT for the comparison snapshots).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from typing import Protocol

from conformance.ref.attrs import HOST_XATTRS, OVERLAY_XATTRS, XATTR_PAX
from conformance.ref.errors import LayerError
from conformance.ref.layers import OPAQUE, WHITEOUT

CHUNK = 1 << 20
Path = tuple[str, ...]

#: Host-specific labels are not image content (umoci leaves security.selinux out of layers too), and
#: overlayfs's own state is never exported (moby's ConvertWrite strips it as well).
SKIPPED_XATTRS = (*HOST_XATTRS, *OVERLAY_XATTRS)

_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "char",
          stat.S_IFBLK: "block", stat.S_IFIFO: "fifo"}
_TAR_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
              "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}


class Writable(Protocol):
    """Where a layer goes: anything with write(bytes)."""

    def write(self, data: bytes, /) -> object:
        """Write all of `data`."""
        ...


@dataclass(frozen=True)
class Node:
    """What a layer records of one path (lstat, never following symlinks)."""

    kind: str
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int
    rdev: tuple[int, int]
    target: str
    xattrs: tuple[tuple[str, bytes], ...]
    inode: tuple[int, int]
    nlink: int

    def same_metadata(self, other: Node) -> bool:
        """Equal as far as a tar header and its PAX records can tell, content aside."""
        return (self.kind, self.mode, self.uid, self.gid, self.mtime, self.rdev, self.target, self.xattrs) == (
            other.kind, other.mode, other.uid, other.gid, other.mtime, other.rdev, other.target, other.xattrs)


@dataclass(frozen=True)
class DiffStats:
    """The layer written: its digest (= DiffID, it is uncompressed), size and what it holds."""

    digest: str
    size: int
    entries: int
    whiteouts: int
    opaque_whiteouts: int
    hardlinks: int
    notes: tuple[str, ...]


class _Tree:
    """A scanned directory tree: one Node per path, children in byte order, hardlink groups."""

    def __init__(self, root: str | os.PathLike[str] | None, notes: list[str]) -> None:
        self.root = os.fspath(root) if root is not None else None
        self.nodes: dict[Path, Node] = {}
        self.children: dict[Path, list[str]] = {}
        if self.root is not None:
            self.nodes[()] = _node(self.root, notes, "")
            self._scan((), notes)
        groups: dict[tuple[int, int], list[Path]] = {}
        for path, node in self.nodes.items():
            if node.kind != "dir" and node.nlink > 1:
                groups.setdefault(node.inode, []).append(path)
        self.group = {path: tuple(sorted(members)) for members in groups.values() for path in members}

    def _scan(self, top: Path, notes: list[str]) -> None:
        stack = [top]
        while stack:
            parts = stack.pop()
            names = []
            with os.scandir(self.path(parts)) as entries:
                for entry in entries:
                    path = (*parts, entry.name)
                    node = _node(entry.path, notes, "/".join(path))
                    if node.kind == "socket":
                        continue
                    names.append(entry.name)
                    self.nodes[path] = node
                    if node.kind == "dir":
                        stack.append(path)
            self.children[parts] = sorted(names, key=os.fsencode)

    def path(self, parts: Path) -> str:
        """The host path of `parts`."""
        assert self.root is not None
        return os.path.join(self.root, *parts)

    def linked(self, path: Path) -> tuple[Path, ...]:
        """The paths sharing `path`'s inode in this tree (just `path` when it has no hardlinks)."""
        return self.group.get(path, (path,))


def _node(path: str, notes: list[str], shown: str) -> Node:
    info = os.lstat(path)
    kind = _KINDS.get(stat.S_IFMT(info.st_mode), "socket")
    if kind == "socket":
        notes.append(f"{shown!r}: sockets cannot be stored in a layer; left out")
    xattrs = []
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        names = []
    for name in sorted(names):
        if not name.startswith(SKIPPED_XATTRS):
            xattrs.append((name, os.getxattr(path, name, follow_symlinks=False)))
    return Node(kind=kind, mode=stat.S_IMODE(info.st_mode), uid=info.st_uid, gid=info.st_gid,
                mtime=info.st_mtime_ns // 10**9, size=info.st_size if kind == "file" else 0,
                rdev=(os.major(info.st_rdev), os.minor(info.st_rdev)) if kind in ("char", "block") else (0, 0),
                target=os.readlink(path) if kind == "symlink" else "", xattrs=tuple(xattrs),
                inode=(info.st_dev, info.st_ino), nlink=info.st_nlink)


# One planned tar entry: ("entry", path) copies upper's node; ("whiteout", path) deletes path;
# ("opaque", dir) hides dir's lower children.
_Item = tuple[str, Path]


class _Planner:
    """Decides the entries of the layer; see the module doc."""

    def __init__(self, lower: _Tree, upper: _Tree) -> None:
        self.lower = lower
        self.upper = upper
        self.extra: set[Path] = set()  # hardlink partners that must be emitted too
        self._same: dict[Path, bool] = {}  # content comparisons, kept across planning rounds

    def plan(self) -> list[_Item]:
        """Plan, then widen to whole hardlink groups until nothing more is pulled in."""
        while True:
            items = self._visit((), force=False)
            emitted = {path for kind, path in items if kind == "entry"}
            wanted = {member for path in emitted for member in self.upper.linked(path)}
            if wanted <= emitted:
                return items
            self.extra |= wanted

    def _changed(self, path: Path) -> bool:
        new, old = self.upper.nodes[path], self.lower.nodes.get(path)
        if old is None or path in self.extra or not new.same_metadata(old):
            return True
        if new.kind != "file":
            return False
        if self.upper.linked(path) != self.lower.linked(path):
            return True
        if new.size != old.size:
            return True
        if path not in self._same:
            self._same[path] = _same_content(self.lower.path(path), self.upper.path(path))
        return not self._same[path]

    def _visit(self, parts: Path, *, force: bool) -> list[_Item]:
        """The items below directory `parts`; `force` emits everything (no lower content to compare)."""
        items: list[_Item] = []
        for name in self.upper.children.get(parts, []):
            path = (*parts, name)
            if name.startswith(WHITEOUT):
                raise LayerError("a name starting with '.wh.' cannot be stored in a layer (OCI-WH-003)",
                                 layer="upper", entry="/".join(path))
            node, old = self.upper.nodes[path], self.lower.nodes.get(path)
            changed = force or self._changed(path)
            below: list[_Item] = []
            if node.kind == "dir":
                below = self._visit(path, force=force or old is None or old.kind != "dir")
            if changed or below:
                items.append(("entry", path))
                items.extend(below)
        if force or self.lower.nodes.get(parts, None) is None:
            return items
        present = set(self.upper.children.get(parts, []))
        gone = [name for name in self.lower.children.get(parts, []) if name not in present]
        if not gone:
            return items
        for name in gone:
            if len(os.fsencode(WHITEOUT + name)) > 255:
                raise LayerError("the whiteout of this name would pass NAME_MAX", layer="lower",
                                 entry="/".join((*parts, name)))
        explicit = [("whiteout", (*parts, name)) for name in gone] + items
        if not parts:  # the rootfs itself is never made opaque: that would hide any base it is put on
            return explicit
        opaque = [("opaque", parts), *self._visit(parts, force=True)]
        return opaque if self._cost(opaque) < self._cost(explicit) else explicit

    def _cost(self, items: list[_Item]) -> int:
        """Roughly the bytes these items take in a tar: a header each, plus file content."""
        total = 0
        for kind, path in items:
            total += 512 if len("/".join(path)) < 100 else 1536
            if kind == "entry" and self.upper.nodes[path].kind == "file":
                total += -(-self.upper.nodes[path].size // 512) * 512
        return total


def write_diff(lower: str | os.PathLike[str] | None, upper: str | os.PathLike[str], out: Writable, *,
               faults: frozenset[str] = frozenset()) -> DiffStats:
    """Write the layer from `lower` (None: an empty tree, so a full layer of `upper`) to `upper`.

    `faults` names deliberately wrong behaviours, only for the suite's own tests.
    """
    notes: list[str] = []
    upper_tree = _Tree(upper, notes)
    plan = _Planner(_Tree(lower, notes), upper_tree).plan()
    sink = _HashingWriter(out)
    counts = {"entries": 0, "whiteouts": 0, "opaque_whiteouts": 0, "hardlinks": 0}
    first_of: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for kind, path in _ordered(plan):
            if kind != "entry" and "omit-whiteouts" in faults:  # FAULT: deletions are not recorded
                continue
            counts["entries"] += 1
            if kind == "whiteout":
                counts["whiteouts"] += 1
                tar.addfile(_marker("/".join((*path[:-1], WHITEOUT + path[-1]))))
            elif kind == "opaque":
                counts["opaque_whiteouts"] += 1
                tar.addfile(_marker("/".join((*path, OPAQUE))))
            else:
                node = upper_tree.nodes[path]
                name = "/".join(path)
                info = _header(name, node)
                if "nondeterministic-diff" in faults:  # FAULT: a random header field in every entry
                    info.pax_headers = {**info.pax_headers, "conformance.nonce": os.urandom(8).hex()}
                if node.kind != "dir" and node.nlink > 1 and node.inode in first_of:
                    info.type, info.linkname, info.size = tarfile.LNKTYPE, first_of[node.inode], 0
                    counts["hardlinks"] += 1
                    tar.addfile(info)
                    continue
                first_of.setdefault(node.inode, name)
                if node.kind == "file":
                    with _open_nofollow(upper_tree.path(path)) as content:
                        tar.addfile(info, content)
                else:
                    tar.addfile(info)
    return DiffStats(digest=sink.digest(), size=sink.size, notes=tuple(notes), **counts)


def diff_trees(lower: str | os.PathLike[str] | None, upper: str | os.PathLike[str], *,
               faults: frozenset[str] = frozenset()) -> bytes:
    """The layer from `lower` to `upper` as bytes (write_diff into memory)."""
    buffer = io.BytesIO()
    write_diff(lower, upper, buffer, faults=faults)
    return buffer.getvalue()


def _ordered(plan: list[_Item]) -> list[_Item]:
    """Depth first, byte order, and in each directory: opaque marker, whiteouts, then entries.

    Each item sorts by its path as (rank, name) pairs, rank 2 for directories on the way, so a
    directory sorts before everything inside it; the last pair ranks opaque 0, whiteout 1, entry 2.
    """

    def key(item: _Item) -> list[tuple[int, bytes]]:
        kind, path = item
        steps = [(2, os.fsencode(part)) for part in path]
        if kind == "opaque":
            return [*steps, (0, b"")]
        if kind == "whiteout":
            return [*steps[:-1], (1, steps[-1][1])]
        return steps

    return sorted(plan, key=key)


def _header(name: str, node: Node) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = _TAR_TYPES[node.kind]
    info.mode = node.mode
    info.uid, info.gid = node.uid, node.gid
    info.uname = info.gname = ""  # no host names: a layer must not depend on /etc/passwd
    info.mtime = node.mtime
    info.size = node.size
    info.linkname = node.target
    info.devmajor, info.devminor = node.rdev
    info.pax_headers = {XATTR_PAX + key: value.decode("utf-8", "surrogateescape") for key, value in node.xattrs}
    return info


def _marker(name: str) -> tarfile.TarInfo:
    """A whiteout header: an empty regular file, fixed mode, owner and time (moby writes 0600 too)."""
    info = tarfile.TarInfo(name)
    info.mode = 0o600
    info.mtime = 0
    info.uname = info.gname = ""
    return info


def _same_content(left: str, right: str) -> bool:
    with _open_nofollow(left) as one, _open_nofollow(right) as other:
        while True:
            a, b = one.read(CHUNK), other.read(CHUNK)
            if a != b:
                return False
            if not a:
                return True


def _open_nofollow(path: str) -> io.BufferedReader:
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")


class _HashingWriter:
    """Counts and hashes what tarfile writes, so the digest comes without reading the layer again."""

    def __init__(self, out: Writable) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self._out.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


# The pieces commit.py (an overlay upper dir as a layer) writes entries with, under public names.
read_node = _node
tar_header = _header
whiteout_header = _marker
