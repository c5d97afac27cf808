"""Operations on the overlay model's merged view: what each system call changes in the upper layer.

Each operation works as the kernel's does: it looks the path up in the merged view (ovltree.View),
copies up what it is about to change (overlayfs.rst § Non-directories), and writes only to the upper
layer, leaving whiteouts (§ whiteouts and opaque directories), opaque directories and redirects
(§ renaming directories) where the kernel would. Failures raise ovltree.Errno with the errno name.

What 6.18 writes that the doc does not say, seen on tmpfs layers (the executors' sandbox):
- "overlay.origin" (a file handle) on every copied-up directory, and on a copied-up non-directory
  unless its lower inode has more than one link and index is off ("don't set origin when we are breaking
  the association with a lower hard link", fs/overlayfs/copy_up.c);
- "overlay.impure" = "y" on the upper directory a lower object is copied up into, and on the directory
  a copied-up object or a redirected directory is renamed into from another directory;
- whiteouts made by unlink and rmdir are hard links of one whiteout kept in the work (or index) dir,
  so their st_nlink is their number + 1; a rename's whiteout (RENAME_WHITEOUT) is a fresh inode;
- a pure upper directory renamed into a merged directory is made opaque (fs/overlayfs/dir.c
  ovl_rename: ovl_set_opaque_xerr), so it does not merge with a lower directory of its new name;
- a metacopy copy-up writes a sparse file of the lower size and an empty "overlay.metacopy".
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from typing import Any

from conformance.ref.ovloptions import Config
from conformance.ref.ovltree import Errno, Inode, Merged, View, join, nlink

_MAX_HOPS = 40  # symlinks followed in one path walk before ELOOP (include/linux/namei.h MAXSYMLINKS)
_SETID = 0o6000


class Mount:
    """One mounted overlay in the model: its view, its configuration and the time it stamps on changes."""

    def __init__(self, view: View, config: Config, *, now: int, faults: frozenset[str] = frozenset()) -> None:
        self.view = view
        self.upper = view.upper
        self.config = config
        self.now = now
        self.faults = faults
        self.shared_whiteout: Inode | None = None

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
            if not meta and found.upper.data is not None:  # the delayed data copy of a metacopy file
                found.upper.content = found.upper.data.content
                found.upper.data = None
                found.upper.xattrs.pop("overlay.metacopy", None)
            return found.upper
        folder = self.walk(posixpath.dirname(found.path), follow=False)
        parent = self.copy_up(folder)
        layer, path = found.lowers[0]
        lower = self.view.lowers[layer][path]
        links = nlink(self.view.lowers[layer], path)
        keep_links = self.config.index or "hardlinks-kept-without-index" in self.faults
        indexed = self.view.index.get((layer, id(lower)))
        if indexed is not None:  # § index: another name of a hard link already copied up
            self.upper[found.path] = indexed
            found.upper = indexed
            return self.copy_up(found, meta=meta)
        node = lower.copy()
        node.data = None
        node.xattrs = {k: v for k, v in lower.xattrs.items() if not k.startswith("overlay.")}
        self._faulty_copy(node)
        if node.kind == "dir" or links == 1 or self.config.index:
            node.xattrs["overlay.origin"] = "*"
        if meta and self.config.metacopy and node.kind == "file" and "metacopy-copies-data" not in self.faults:
            node.content = "\0" * len(lower.content.encode())
            node.data = lower
            node.xattrs["overlay.metacopy"] = ""
        if node.kind != "dir" and links > 1 and keep_links:
            self.view.index[(layer, id(lower))] = node
            if self.config.index:
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


def _pad(content: str, size: int) -> str:
    data = content.encode()[:size]
    return (data + b"\0" * (size - len(data))).decode(errors="replace")


def _chown(node: Inode, uid: int, gid: int) -> None:
    node.uid = node.uid if uid == -1 else uid
    node.gid = node.gid if gid == -1 else gid
    if node.kind != "dir":  # chown(2) drops set-user-ID, and set-group-ID with group execute
        node.mode &= ~(0o4000 | (0o2000 if node.mode & 0o010 else 0))


Op = Mapping[str, Any]


def run(mount: Mount, op: Op) -> Any:
    """Run one op (conformance/scenarios/overlay.py's forms) and return its value; Errno on failure."""
    kind = str(op["op"])
    if kind not in OPS:
        raise ValueError(f"unknown overlay op {kind!r}; known: {', '.join(sorted(OPS))}")
    return OPS[kind](mount, op)


def _read(m: Mount, op: Op) -> str:
    found = m.walk(str(op["path"]), follow=True)
    if m.view.is_dir(found):
        raise Errno("EISDIR")
    node = m.view.inode(found)
    return node.data.content if node.data is not None else node.content


def stat_value(m: Mount, found: Merged) -> dict[str, Any]:
    """Lstat of a merged object: attributes from the upper object, else the topmost lower one.

    § Directories: "metadata and extended attributes are reported for the upper directory only". A merged
    directory reports st_nlink 1 (fs/overlayfs/inode.c ovl_getattr: the real count is unknown); other
    directories report their real directory's.
    """
    node = m.view.inode(found)
    if node.kind == "dir":
        layer, path = m.view.real_dir(found)
        links = 1 if m.view.merged_dir(found) else nlink(layer, path)
        size = 2 * 20 + 20 * len([p for p in layer if posixpath.dirname(p) == path and p])
    else:
        links = node.ovl_nlink or _links(m, found)
        size = len(node.content.encode()) if node.kind == "file" else len(node.target) if node.kind == "symlink" else 0
    return {"type": node.kind, "mode": node.mode & 0o7777, "uid": node.uid, "gid": node.gid, "size": size,
            "nlink": links}


def _links(m: Mount, found: Merged) -> int:
    if found.upper is not None:
        return nlink(m.upper, found.path)
    layer, path = found.lowers[0]
    return nlink(m.view.lowers[layer], path)


def _create(m: Mount, op: Op) -> None:
    mode = int(op.get("mode", 0o644)) & 0o7777
    m.new_entry(str(op["path"]).strip("/"), Inode("file", mode, content=str(op.get("content", "")), mtime=m.now))


def _write(m: Mount, op: Op, *, append: bool) -> None:
    found = m.data_file(str(op["path"]))
    text = str(op.get("content", ""))
    m.change_data(found, (lambda old: old + text) if append else (lambda old: text), fault="no-copy-up-on-write")


def _truncate(m: Mount, op: Op) -> None:
    found = m.walk(str(op["path"]), follow=True)
    if m.view.is_dir(found):
        raise Errno("EISDIR")
    if m.view.kind(found) != "file":
        raise Errno("EINVAL")
    size = int(op["size"])
    m.change_data(found, lambda old: _pad(old, size), fault="truncate-without-copy-up")


def _meta(change: Callable[[Inode, Op], None], *, xattr: bool = False) -> Callable[[Mount, Op], None]:
    """A metadata change: copy up (metadata only where metacopy allows it), then change the upper inode."""
    def apply(m: Mount, op: Op) -> None:
        found = m.walk(str(op["path"]), follow=True)
        if xattr and m.view.kind(found) not in ("file", "dir"):
            raise Errno("EPERM")  # user.* xattrs only on regular files and directories (xattr(7))
        change(m.copy_up(found, meta=True), op)
    return apply


def _unlink(m: Mount, op: Op) -> None:
    path = str(op["path"]).strip("/")
    folder, name = m.parent(path)
    found = m.view.child(folder, name)
    if found is None:
        raise Errno("ENOENT")
    if m.view.is_dir(found):
        raise Errno("EISDIR")
    path = found.path
    positive = m.lower_positive(folder, name)
    parent = m.copy_up(folder)
    node = m.view.inode(found)
    if node.ovl_nlink:
        node.ovl_nlink -= 1
    if found.upper is not None and not ("unlink-leaves-upper-file" in m.faults and not positive):
        del m.upper[path]
    if positive and "no-whiteout-on-unlink" not in m.faults:
        m.whiteout(path)
    parent.mtime = m.now


def _rmdir(m: Mount, op: Op) -> None:
    path = str(op["path"]).strip("/")
    if not path:
        raise Errno("EBUSY")
    folder, name = m.parent(path)
    found = m.view.child(folder, name)
    if found is None:
        raise Errno("ENOENT")
    if not m.view.is_dir(found):
        raise Errno("ENOTDIR")
    path = found.path
    if "rmdir-ignores-lower-children" in m.faults:
        visible = [n for n in m.upper if posixpath.dirname(n) == path and n and not m.upper[n].whiteout]
    else:
        visible = m.view.readdir(found, listing=False)
    if visible:
        raise Errno("ENOTEMPTY")
    positive = m.lower_positive(folder, name)
    parent = m.copy_up(folder)
    m.remove_upper(path)
    if positive:
        m.whiteout(path)
    parent.mtime = m.now


def _link(m: Mount, op: Op) -> None:
    source = m.walk(str(op["path"]), follow=False)
    folder, name = m.parent(str(op["to"]).strip("/"))
    if m.view.child(folder, name) is not None:
        raise Errno("EEXIST")  # fs/namei.c: the new name is checked before vfs_link refuses a directory
    if m.view.is_dir(source):
        raise Errno("EPERM")
    to = join(folder.path, name)
    node = m.copy_up(source, meta=True)  # § Non-directories: "creating a hard-link also requires copy_up"
    parent = m.copy_up(folder)
    m.upper[to] = node
    if node.ovl_nlink:
        node.ovl_nlink += 1
    parent.mtime = m.now


def _rename(m: Mount, op: Op) -> None:
    """rename(2) (§ renaming directories; fs/overlayfs/dir.c ovl_rename)."""
    src_path, dst_path = str(op["path"]).strip("/"), str(op["to"]).strip("/")
    if not src_path or not dst_path:
        raise Errno("EBUSY")
    sfolder, sname = m.parent(src_path)
    dfolder, dname = m.parent(dst_path)
    src = m.view.child(sfolder, sname)
    if src is None:
        raise Errno("ENOENT")
    dst = m.view.child(dfolder, dname)
    to = join(dfolder.path, dname)
    if to == src.path:
        return
    is_dir = m.view.is_dir(src)
    if is_dir and to.startswith(src.path + "/"):
        raise Errno("EINVAL")  # fs/namei.c do_renameat2: the source is an ancestor of the target
    if src.path.startswith(to + "/"):
        raise Errno("ENOTEMPTY")  # ... and the target an ancestor of the source
    if dst is not None and is_dir and not m.view.is_dir(dst):
        raise Errno("ENOTDIR")
    if dst is not None and not is_dir and m.view.is_dir(dst):
        raise Errno("EISDIR")
    lowerish = is_dir and bool(src.lowers)
    no_redirect = "rename-dir-without-redirect" in m.faults
    if lowerish and not m.config.redirect_create and not no_redirect:
        raise Errno("EXDEV")  # § renaming directories: "return EXDEV error ... This is the default behavior."
    # ovl_rename refuses the move (EXDEV) before it checks that a directory it replaces is empty
    if dst is not None and is_dir and m.view.readdir(dst, listing=False):
        raise Errno("ENOTEMPTY")
    samedir = sfolder.path == dfolder.path
    positive = m.lower_positive(sfolder, sname)
    node = m.copy_up(src, meta=True)
    sparent, dparent = m.copy_up(sfolder), m.copy_up(dfolder)
    redirect = node.xattrs.get("overlay.redirect")
    if (lowerish or node.data is not None) and not no_redirect:
        if not (redirect and (samedir or redirect.startswith("/"))):
            lower_path = src.lowers[0][1] if lowerish else src.path
            node.xattrs["overlay.redirect"] = sname if samedir else "/" + lower_path
    elif is_dir and not lowerish and "overlay.opaque" not in node.xattrs and m.view.merged_dir(dfolder):
        node.xattrs["overlay.opaque"] = "y"
    if not samedir and ("overlay.origin" in node.xattrs or "overlay.redirect" in node.xattrs):
        dparent.xattrs["overlay.impure"] = "y"
    dst_whiteout = m.upper.get(to)
    dst_whiteout = dst_whiteout if dst_whiteout is not None and dst_whiteout.whiteout else None
    if dst is not None:
        gone = m.view.inode(dst)
        if gone.ovl_nlink:
            gone.ovl_nlink -= 1
    m.remove_upper(to)
    for path in sorted(p for p in m.upper if p == src.path or p.startswith(src.path + "/")):
        m.upper[to + path[len(src.path):]] = m.upper.pop(path)
    if positive:  # RENAME_WHITEOUT, or RENAME_EXCHANGE with a whiteout already at the target
        m.upper[src.path] = dst_whiteout if dst_whiteout is not None else Inode("chardev", 0, mtime=m.now)
    sparent.mtime = dparent.mtime = m.now


def _set_mode(node: Inode, op: Op) -> None:
    node.mode = int(op["mode"]) & 0o7777


def _set_mtime(node: Inode, op: Op) -> None:
    node.mtime = int(op["mtime"])


def _set_xattr(node: Inode, op: Op) -> None:
    node.xattrs[str(op["name"])] = str(op.get("value", ""))


def _readdir(m: Mount, op: Op) -> list[str]:
    found = m.walk(str(op["path"]), follow=True)
    if not m.view.is_dir(found):
        raise Errno("ENOTDIR")
    return m.view.readdir(found)


def _readlink(m: Mount, op: Op) -> str:
    node = m.view.inode(m.walk(str(op["path"]), follow=False))
    if node.kind != "symlink":
        raise Errno("EINVAL")
    return node.target


def _mknod(m: Mount, op: Op) -> None:
    if op.get("kind", "fifo") != "fifo":
        raise ValueError(f"mknod of kind {op.get('kind')!r}: only fifo is in the contract")
    m.new_entry(str(op["path"]).strip("/"), Inode("fifo", int(op.get("mode", 0o644)) & 0o7777, mtime=m.now))


OPS: dict[str, Callable[[Mount, Op], Any]] = {
    "read": _read,
    "stat": lambda m, op: stat_value(m, m.walk(str(op["path"]), follow=False)),
    "readdir": _readdir,
    "readlink": _readlink,
    "create": _create,
    "write": lambda m, op: _write(m, op, append=False),
    "append": lambda m, op: _write(m, op, append=True),
    "truncate": _truncate,
    "chmod": _meta(_set_mode),
    "chown": _meta(lambda node, op: _chown(node, int(op.get("uid", -1)), int(op.get("gid", -1)))),
    "utimes": _meta(_set_mtime),
    "setxattr": _meta(_set_xattr, xattr=True),
    "unlink": _unlink,
    "rmdir": _rmdir,
    "mkdir": lambda m, op: m.new_entry(str(op["path"]).strip("/"),
                                       Inode("dir", int(op.get("mode", 0o755)) & 0o7777, mtime=m.now)),
    "rename": _rename,
    "link": _link,
    "symlink": lambda m, op: m.new_entry(str(op["path"]).strip("/"),
                                         Inode("symlink", 0o777, target=str(op["target"]), mtime=m.now)),
    "mknod": _mknod,
}
