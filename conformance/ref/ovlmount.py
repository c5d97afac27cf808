"""One mounted overlay in the model: path walks, copy-up, whiteouts and new entries in the upper layer.

What every operation (ovlops) needs before it changes anything: the merged object a path reaches, the
upper copy of it (overlayfs.rst § Non-directories: copy_up, parents first; § Metadata only copy up),
and the whiteout or opaque marker a removal or a new directory leaves (§ whiteouts and opaque
directories).

What 6.18 writes that the doc does not say, seen on tmpfs layers (the executors' sandbox):
- "overlay.origin" (a file handle) on every copied-up directory, and on a copied-up non-directory
  unless its lower inode has more than one link and index is off ("don't set origin when we are breaking
  the association with a lower hard link", fs/overlayfs/copy_up.c);
- "overlay.impure" = "y" on the upper directory a lower object is copied up into;
- whiteouts made by unlink and rmdir are hard links of one whiteout kept in the work (or index) dir,
  so their st_nlink is their number + 1;
- a metacopy copy-up writes a sparse file of the lower size and an empty "overlay.metacopy".
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from conformance.ref.ovloptions import Config
from conformance.ref.ovltree import Errno, Inode, Merged, View, join, nlink

_MAX_HOPS = 40  # symlinks followed in one path walk before ELOOP (include/linux/namei.h MAXSYMLINKS)


class Mount:
    """One mounted overlay in the model: its view, its configuration and the time it stamps on changes."""

    def __init__(self, view: View, config: Config, *, now: int, faults: frozenset[str] = frozenset()) -> None:
        self.view = view
        self.upper = view.upper
        self.config = config
        self.now = now
        self.faults = faults
        self.shared_whiteout: Inode | None = None
        self.listings: dict[str, list[str]] = {}  # what each directory's first readdir saw (a fault's cache)

    # --- lookups -----------------------------------------------------------------------------------

    def walk(self, path: str, *, follow: bool) -> Merged:
        """Resolve path in the merged view; symlinks in the middle always followed, at the end if follow.

        An absolute symlink target points outside the mount (at the host's root): the model cannot see
        there and answers ENOENT.
        """
        todo = [p for p in path.split("/") if p not in ("", ".")]
        current = self.view.root()
        hops = 0
        while todo:
            name = todo.pop(0)
            if not self.view.is_dir(current):
                raise Errno("ENOTDIR")
            if name == "..":
                current = self.walk(posixpath.dirname(current.path), follow=False)
                continue
            found = self.view.child(current, name)
            if found is None:
                raise Errno("ENOENT")
            if self.view.kind(found) == "symlink" and (todo or follow):
                hops += 1
                target = self.view.inode(found).target
                if hops > _MAX_HOPS:
                    raise Errno("ELOOP")
                if target.startswith("/"):
                    raise Errno("ENOENT")
                todo = [p for p in target.split("/") if p not in ("", ".")] + todo
                continue
            current = found
        return current

    def parent(self, path: str) -> tuple[Merged, str]:
        """The directory an entry is made or removed in, and the entry's name."""
        head, name = posixpath.split(path.strip("/"))
        folder = self.walk(head, follow=True)
        if not self.view.is_dir(folder):
            raise Errno("ENOTDIR")
        return folder, name

    def lower_positive(self, folder: Merged, name: str) -> bool:
        """Whether a lower layer below folder shows name (fs/overlayfs/namei.c ovl_lower_positive).

        This decides whether removing the name needs a whiteout (§ whiteouts and opaque directories).
        """
        for layer, path in folder.lowers:
            node = self.view.lowers[layer].get(join(path, name))
            if node is not None:
                return not node.whiteout
        return False

    def looked_at(self, found: Merged) -> Merged:
        """A read-only access: nothing changes, except under the fault that copies up on every access."""
        if "copy-up-on-read" in self.faults and found.path:
            self.copy_up(found)
        return found

    # --- copy up -----------------------------------------------------------------------------------

    def copy_up(self, found: Merged, *, meta: bool = False) -> Inode:
        """Make found an upper object (§ Non-directories: "copy_up"), parents first.

        "It then creates the object with the same metadata (owner, mode, mtime, symlink-target etc.) and
        then if the object is a file, the data is copied ... Finally any extended attributes are copied
        up." A directory is copied up without its contents. With meta and metacopy=on (§ Metadata only
        copy up) a regular file's data stays below until a write needs it.
        """
        if found.upper is None and found.path in self.upper and self.view.is_dir(found):
            found.upper = self.upper[found.path]  # copied up since found was looked up (as a parent)
        if found.upper is not None:
            below = found.upper.data
            if not meta and below is not None and "metacopy-kept-after-write" not in self.faults:
                found.upper.content = below.content  # the delayed data copy of a metacopy file
                found.upper.data = None
                found.upper.xattrs.pop("overlay.metacopy", None)
            return found.upper
        folder = self.walk(posixpath.dirname(found.path), follow=False)
        parent = self.copy_up(folder)
        layer, path = found.lowers[0]
        lower = self.view.lowers[layer][path]
        links = nlink(self.view.lowers[layer], path)
        index = self.config.index and "index-ignored" not in self.faults
        keep_links = index or "hardlinks-kept-without-index" in self.faults
        indexed = self.view.index.get((layer, id(lower)))
        if indexed is not None:  # § index: another name of a hard link already copied up
            self.upper[found.path] = indexed
            found.upper = indexed
            return self.copy_up(found, meta=meta)
        if lower.lost_data and not (meta and self.config.metacopy):
            raise Errno("ENOENT")  # the data a full copy-up needs is in no layer (see ovltree.link_data)
        source = lower.data if lower.data is not None else lower  # where the bytes are: a metacopy's data
        node = lower.copy()
        node.data = None
        node.content = source.content
        kept = ("overlay.opaque",) if "copy-up-keeps-opaque" in self.faults else ()
        node.xattrs = {k: v for k, v in lower.xattrs.items() if not k.startswith("overlay.") or k in kept}
        self._faulty_copy(node)
        if node.kind == "dir" or links == 1 or index:
            node.xattrs["overlay.origin"] = "*"
        metacopy = self.config.metacopy or "metacopy-when-off" in self.faults
        if meta and metacopy and node.kind == "file" and "metacopy-copies-data" not in self.faults:
            node.content = "\0" * len(lower.content.encode())
            node.data = source
            node.xattrs["overlay.metacopy"] = ""
        if node.kind != "dir" and links > 1 and keep_links:
            self.view.index[(layer, id(lower))] = node
            if index:
                node.extra_links = 1  # the index entry (work/index/<origin handle>)
                node.ovl_nlink = links
        self.upper[found.path] = node
        found.upper = node
        parent.xattrs["overlay.impure"] = "y"
        return node

    def _faulty_copy(self, node: Inode) -> None:
        if "copy-up-loses-mode" in self.faults:
            node.mode = 0o755 if node.kind == "dir" else 0o644
        if "copy-up-loses-owner" in self.faults:
            node.uid = node.gid = 0
        if "copy-up-loses-xattrs" in self.faults:
            node.xattrs = {}
        if "copy-up-loses-mtime" in self.faults:
            node.mtime = self.now

    # --- helpers -----------------------------------------------------------------------------------

    def whiteout(self, path: str) -> None:
        """Leave a whiteout at path: a link of the mount's one shared whiteout (fs/overlayfs/dir.c ovl_whiteout)."""
        if self.shared_whiteout is None:
            self.shared_whiteout = Inode("chardev", 0, mtime=self.now, extra_links=1)
        self.upper[path] = self.shared_whiteout

    def remove_upper(self, path: str) -> None:
        """Take path and everything under it out of the upper layer."""
        for name in [p for p in self.upper if p == path or p.startswith(path + "/")]:
            del self.upper[name]

    def new_entry(self, path: str, node: Inode) -> None:
        """Create a pure upper object, replacing the whiteout that may be there; opaque if a dir over one."""
        folder, name = self.parent(path)
        if self.view.child(folder, name) is not None:
            raise Errno("EEXIST")
        parent = self.copy_up(folder)
        path = join(folder.path, name)  # the parent's own path: a symlink on the way is resolved
        over_whiteout = path in self.upper and self.upper[path].whiteout
        # § whiteouts and opaque directories; seen on 6.18: with redirect_dir=on every new directory in a
        # merged one is made opaque, and with index=on too (fs/overlayfs/dir.c ovl_create_upper).
        opaque = over_whiteout or ((self.config.redirect_create or self.config.index) and self.view.merged_dir(folder))
        if node.kind == "dir" and opaque and "mkdir-without-opaque" not in self.faults:
            node.xattrs["overlay.opaque"] = "y"
        self.upper[path] = node
        parent.mtime = self.now

    def data_file(self, path: str) -> Merged:
        """The regular file an open for write reaches (symlinks followed)."""
        found = self.walk(path, follow=True)
        if self.view.is_dir(found):
            raise Errno("EISDIR")
        if self.view.kind(found) == "fifo":
            raise Errno("ENXIO")  # the model's answer: the executors' blocking open would wait for a reader
        return found

    def change_data(self, found: Merged, change: Callable[[str], str], *, fault: str) -> None:
        """Copy up with data and change the content; under the fault, change the lower file in place."""
        if found.upper is None and fault in self.faults:
            lower = self.view.inode(found)
            lower.content = change(lower.content)
            return
        node = self.copy_up(found)
        node.content = change(node.content)
        node.mtime = self.now
