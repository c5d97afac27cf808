"""The overlay model's layers and lookup: in-memory inodes, the merged view computed from them on demand.

Like the kernel, the model keeps no merged tree: the upper and lower layers are the state, and every
lookup and readdir merges them again (overlayfs.rst § Directories: "whenever a lookup is requested in
such a merged directory, the lookup is performed in each actual directory"). Paths are relative, with
"" for the root; a layer is a dict path -> Inode, several paths sharing one Inode for hard links.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Sizes of directories on tmpfs, where every executor builds its layers (mm/shmem.c BOGO_DIRENT_SIZE):
#: 2 * 20 for "." and ".." plus 20 per entry.
DIRENT_SIZE = 20
MTIME = 1_600_000_000  # an entry's mtime when it names none (the executors' default too)


class Errno(Exception):
    """A system call's failure in the model; `name` is the errno name the observation reports."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(name)


@dataclass(slots=True, eq=False)
class Inode:
    """One inode of one layer; identity matters (hard links share it), so equality is identity."""

    kind: str  # file, dir, symlink, fifo, chardev
    mode: int
    uid: int = 0
    gid: int = 0
    content: str = ""
    target: str = ""
    rdev: tuple[int, int] = (0, 0)
    mtime: int = MTIME
    xattrs: dict[str, str] = field(default_factory=dict)  # overlay.* normalised, user.* as they are
    extra_links: int = 0  # links outside the trees observed: the work dir's whiteout, an index entry
    data: Inode | None = None  # a metacopy file: the inode below that holds its data
    ovl_nlink: int = 0  # index=on: the link count overlay reports for an indexed inode
    lost_data: bool = False  # a metacopy file whose data no layer below holds: it stats, but open fails

    @property
    def whiteout(self) -> bool:
        """overlayfs.rst § whiteouts: "a character device with 0/0 device number"."""
        return self.kind == "chardev" and self.rdev == (0, 0)

    def copy(self) -> Inode:
        """A new inode with the same attributes (a copy-up before any change)."""
        return Inode(self.kind, self.mode, self.uid, self.gid, self.content, self.target, self.rdev, self.mtime,
                     dict(self.xattrs), 0, self.data, 0, self.lost_data)


Layer = dict[str, Inode]


def overlay_name(name: str) -> str:
    """An xattr name as the observation shows it: trusted.overlay.X and user.overlay.X both as overlay.X."""
    for prefix in ("trusted.overlay.", "user.overlay."):
        if name.startswith(prefix):
            return "overlay." + name[len(prefix):]
    return name


def build_layer(entries: Iterable[Mapping[str, Any]]) -> Layer:
    """A layer from the contract's entries, as the executors write them (parents made 0755 as needed)."""
    layer: Layer = {"": Inode("dir", 0o755)}
    defaults = {"dir": 0o755, "whiteout": 0}
    for entry in entries:
        path = str(entry["name"]).strip("/")
        parent = posixpath.dirname(path)
        while parent and parent not in layer:  # os.makedirs of the missing parents
            layer[parent] = Inode("dir", 0o755)
            parent = posixpath.dirname(parent)
        kind = str(entry.get("type", "file"))
        if kind == "hardlink":
            layer[path] = layer[str(entry["target"]).strip("/")]
            continue
        if kind == "dir" and path in layer and layer[path].kind == "dir":
            node = layer[path]
        else:
            node = Inode({"whiteout": "chardev"}.get(kind, kind), 0)
        node.mode = int(entry.get("mode", defaults.get(kind, 0o644))) if kind != "symlink" else 0o777
        node.uid, node.gid = int(entry.get("uid", 0)), int(entry.get("gid", 0))
        node.content = str(entry.get("content", "")) if kind == "file" else ""
        node.target = str(entry.get("target", "")) if kind == "symlink" else ""
        node.mtime = int(entry.get("mtime", MTIME))
        node.xattrs = {overlay_name(k): str(v) for k, v in dict(entry.get("xattrs") or {}).items()}
        if entry.get("opaque"):
            node.xattrs["overlay.opaque"] = "y"
        layer[path] = node
    return layer


def link_data(lowers: list[Layer], data_only: list[Layer]) -> None:
    """Point each lower metacopy file at the inode below that holds its data.

    overlayfs.rst § Data-only lower layers, § Metadata only copy up: a file with "overlay.metacopy" in a
    lower layer carries metadata only; its data is the regular file at its absolute "overlay.redirect"
    (else at its own path) in a layer below it, the data-only layers last: they are never merged, this is
    the only way to reach them. The kernel looks the data up lazily: a metacopy file whose data is nowhere
    still stats, and opening it fails with ENOENT (6.18). With data-only layers and no metacopy=on the
    kernel rejects the other forms of metacopy; the model does not (a known limit).
    """
    stack = lowers + data_only
    for n, layer in enumerate(lowers):
        for path, node in layer.items():
            if node.kind != "file" or "overlay.metacopy" not in node.xattrs:
                continue
            redirect = node.xattrs.get("overlay.redirect", "")
            where = redirect.strip("/") if redirect.startswith("/") else path
            node.data = next((below[where] for below in stack[n + 1:]
                              if where in below and below[where].kind == "file"), None)
            node.lost_data = node.data is None


def children(layer: Layer, path: str) -> list[str]:
    """The names directly under path in one layer (whiteouts included: they are real entries there)."""
    prefix = path + "/" if path else ""
    return sorted(p[len(prefix):] for p in layer if p.startswith(prefix) and p and "/" not in p[len(prefix):])


def nlink(layer: Layer, path: str) -> int:
    """st_nlink in one layer: links of a non-directory, 2 + subdirectories for a directory."""
    node = layer[path]
    if node.kind == "dir":
        return 2 + sum(1 for name in children(layer, path) if layer[join(path, name)].kind == "dir")
    return sum(1 for other in layer.values() if other is node) + node.extra_links


def dir_size(layer: Layer, path: str) -> int:
    """A tmpfs directory's st_size (see DIRENT_SIZE)."""
    return 2 * DIRENT_SIZE + DIRENT_SIZE * len(children(layer, path))


def join(parent: str, name: str) -> str:
    """A child's path ("" is the root)."""
    return f"{parent}/{name}" if parent else name


@dataclass(slots=True)
class Merged:
    """What a lookup found: the upper object at the same path, and the lower objects below it.

    For a directory `lowers` is its merge stack, top first (layer index, path in that layer, which a
    redirect makes differ from the merged path); for a non-directory it holds the one lower object it
    shows (when there is no upper) or was copied up from.
    """

    path: str
    upper: Inode | None
    lowers: list[tuple[int, str]]


class View:
    """The layers of one mount and the lookup and readdir rules that merge them."""

    def __init__(self, upper: Layer, lowers: list[Layer], *, follow_redirects: bool,
                 faults: frozenset[str] = frozenset()) -> None:
        self.upper = upper
        self.lowers = lowers
        self.follow_redirects = follow_redirects
        self.faults = faults
        #: index=on: (layer, lower inode) -> its upper inode, so all aliases of a hard link show it.
        self.index: dict[tuple[int, int], Inode] = {}

    def inode(self, found: Merged) -> Inode:
        """The inode whose attributes a stat of the merged object shows: the upper one, else the top lower."""
        shadowed = "lower-shadows-upper" in self.faults and found.lowers  # the fault reaches merged dirs too
        if found.upper is not None and not shadowed:
            return found.upper
        layer, path = found.lowers[0]
        lower = self.lowers[layer][path]
        return self.index.get((layer, id(lower)), lower)

    def kind(self, found: Merged) -> str:
        """The merged object's type."""
        return self.inode(found).kind

    def is_dir(self, found: Merged) -> bool:
        """Whether the merged object is a directory."""
        return self.kind(found) == "dir"

    def merged_dir(self, found: Merged) -> bool:
        """A directory made of more than one layer (overlayfs.rst § Directories: "a merged directory")."""
        return self.is_dir(found) and len(found.lowers) + (found.upper is not None) > 1

    def root(self) -> Merged:
        """The root: always the upper root merged with every lower root."""
        return Merged("", self.upper[""], [(n, "") for n in range(len(self.lowers))])

    def child(self, parent: Merged, name: str) -> Merged | None:
        """Look name up in a merged directory (overlayfs.rst § Directories, § whiteouts and opaque directories).

        Upper first: a whiteout hides the name in every layer below, a non-directory hides everything below,
        an opaque directory ("overlay.opaque" = "y") hides the lower directories of its name; a redirect
        ("overlay.redirect", § renaming directories) names where to look in the lower layers, relative to
        the parent or absolute from the root. Then each lower directory of the parent's merge stack, top
        first, with the same rules.
        """
        path = join(parent.path, name)
        upper = self.upper.get(path) if parent.upper is not None and parent.upper.kind == "dir" else None
        if upper is not None and upper.whiteout and "whiteout-ignored" not in self.faults:
            return None
        if upper is not None and upper.whiteout:
            upper = None
        found = Merged(path, upper, [])
        stack = list(parent.lowers)
        lookup = name
        if upper is not None:
            if upper.kind != "dir" and "lower-shadows-upper" not in self.faults:
                return found  # § Directories: "the lower object is hidden" (a metacopy file keeps its data inode)
            opaque = upper.kind == "dir" and upper.xattrs.get("overlay.opaque") == "y"
            if opaque and "opaque-ignored" not in self.faults:
                return found
            redirect = upper.xattrs.get("overlay.redirect") if upper.kind == "dir" else None
            if redirect is not None:
                if not self.follow_redirects:
                    # fs/overlayfs/namei.c: "refusing to follow redirect for (...)", lookup fails with EPERM
                    raise Errno("EPERM")
                if redirect.startswith("/"):
                    stack = [(n, "") for n in range(len(self.lowers))]
                    lookup = redirect.strip("/")
                else:
                    lookup = redirect
        for layer, parent_path in stack:
            lower_path = join(parent_path, lookup)
            node = self.lowers[layer].get(lower_path)
            if node is None:
                continue
            if node.whiteout and "whiteout-ignored" not in self.faults:
                break
            if node.whiteout:
                continue
            hides = node.kind != "dir" or (upper is not None and upper.kind != "dir")
            if hides and upper is not None and "lower-shadows-upper" in self.faults:
                return Merged(path, None, [(layer, lower_path)])
            if node.kind != "dir":
                if not found.lowers and (upper is None or upper.kind != "dir"):
                    found.lowers.append((layer, lower_path))
                break
            if upper is not None and upper.kind != "dir":
                break
            found.lowers.append((layer, lower_path))
            if node.xattrs.get("overlay.opaque") == "y" and "opaque-ignored" not in self.faults:
                break
        if upper is not None and upper.kind == "dir" and found.lowers and "overlay.origin" not in upper.xattrs:
            # 6.18 (fs/overlayfs/namei.c ovl_fix_origin): a lookup of a merged directory whose upper lacks an
            # origin stores one, and marks the upper parent impure.
            upper.xattrs["overlay.origin"] = "*"
            if parent.upper is not None:
                parent.upper.xattrs["overlay.impure"] = "y"
        if upper is None and not found.lowers:
            return None
        if upper is None:
            first = self.lowers[found.lowers[0][0]][found.lowers[0][1]]
            if first.kind != "dir":
                found.lowers = found.lowers[:1]
        return found

    def readdir(self, found: Merged, *, listing: bool = True) -> list[str]:
        """Names in a directory (overlayfs.rst § readdir).

        A merged directory: "upper is read first, then lower - entries that already exist are not re-added",
        and whiteouts hide themselves and the names below. "Readdir on directories that are not merged is
        simply handled by the underlying directory": there a whiteout is listed (seen on 6.18 in an opaque
        upper directory and in a single-layer lower one), though a lookup of it fails with ENOENT. With
        listing=False: only the names a lookup finds (what rmdir's emptiness check and the merged tree see).
        """
        layers: list[tuple[Layer, str]] = []
        if found.upper is not None:
            layers.append((self.upper, found.path))
        layers += [(self.lowers[n], p) for n, p in found.lowers]
        if "readdir-duplicates" in self.faults:
            return sorted(n for layer, p in layers for n in children(layer, p) if not layer[join(p, n)].whiteout)
        if listing and not self.merged_dir(found) and "readdir-shows-whiteouts" not in self.faults:
            layer, p = layers[0]
            return children(layer, p)
        seen: set[str] = set()
        hidden: set[str] = set()
        for layer, p in layers:
            for name in children(layer, p):
                if name in seen:
                    continue
                seen.add(name)
                if layer[join(p, name)].whiteout and ("readdir-shows-whiteouts" not in self.faults or not listing):
                    hidden.add(name)
        return sorted(seen - hidden)

    def real_dir(self, found: Merged) -> tuple[Layer, str]:
        """The directory whose st_size and st_nlink a stat shows: the upper one, else the top lower one."""
        if found.upper is not None:
            return self.upper, found.path
        layer, path = found.lowers[0]
        return self.lowers[layer], path
