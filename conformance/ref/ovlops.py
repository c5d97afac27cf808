"""Operations on the overlay model's merged view: what each system call changes in the upper layer.

Each operation works as the kernel's does: it looks the path up in the merged view through the mount
(ovlmount.Mount), copies up what it is about to change, and writes only to the upper layer, leaving
whiteouts, opaque directories and redirects (§ renaming directories) where the kernel would. Failures
raise ovltree.Errno with the errno name.

What 6.18 does on rename that the doc does not say:
- "overlay.impure" = "y" on the directory a copied-up object or a redirected directory is renamed into
  from another directory;
- a rename's whiteout (RENAME_WHITEOUT) is a fresh inode, not a link of the shared one;
- a pure upper directory renamed into a merged directory is made opaque (fs/overlayfs/dir.c
  ovl_rename: ovl_set_opaque_xerr), so it does not merge with a lower directory of its new name.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from typing import Any

from conformance.ref.ovlmount import Mount
from conformance.ref.ovltree import Errno, Inode, Merged, join, nlink


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
    found = m.looked_at(m.walk(str(op["path"]), follow=True))
    if m.view.is_dir(found):
        raise Errno("EISDIR")
    node = m.view.inode(found)
    if node.lost_data:
        raise Errno("ENOENT")  # open(2) of a metacopy file whose data no layer holds (ovltree.link_data)
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
        if found.upper is None and "no-copy-up-on-metadata-change" in m.faults:
            change(m.view.inode(found), op)  # the lower inode itself: the merged view changes, upper does not
            return
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
    copied = found.upper is not None and "whiteout-only-for-lower-entries" in m.faults
    if positive and "no-whiteout-on-unlink" not in m.faults and not copied:
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
    if not positive and any(posixpath.dirname(p) == path for p in m.upper if p):
        # Nothing below to white out: the kernel rmdirs the real upper dir (fs/overlayfs/dir.c
        # ovl_remove_upper), which fails while a whiteout is still in it (seen on 6.18).
        raise Errno("ENOTEMPTY")
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
    parent = m.copy_up(folder)
    if source.upper is None and "link-without-copy-up" in m.faults:
        copy = m.view.inode(source).copy()  # a separate copy of the lower data; the lower a stays as it is
        copy.xattrs, copy.data = {}, None
        m.upper[to] = copy
        parent.mtime = m.now
        return
    node = m.copy_up(source, meta=True)  # § Non-directories: "creating a hard-link also requires copy_up"
    if "overlay.origin" in node.xattrs:  # 6.18: a directory gaining a copied-up name is marked impure
        parent.xattrs["overlay.impure"] = "y"
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
    if is_dir and "rename-dir-always-exdev" in m.faults:
        raise Errno("EXDEV")
    lowerish = is_dir and bool(src.lowers)
    no_redirect = "rename-dir-without-redirect" in m.faults
    if lowerish and not m.config.redirect_create and not no_redirect:
        raise Errno("EXDEV")  # § renaming directories: "return EXDEV error ... This is the default behavior."
    # ovl_rename refuses the move (EXDEV) before it checks that a directory it replaces is empty; a target
    # with nothing below it is left to the upper fs's rename, after the source got its xattrs (6.18)
    pure_upper_target = dst is not None and is_dir and not dst.lowers
    if dst is not None and is_dir and not pure_upper_target and m.view.readdir(dst, listing=False):
        raise Errno("ENOTEMPTY")
    samedir = sfolder.path == dfolder.path
    positive = m.lower_positive(sfolder, sname)
    node = m.copy_up(src, meta=True)
    sparent, dparent = m.copy_up(sfolder), m.copy_up(dfolder)
    redirect = node.xattrs.get("overlay.redirect")
    if (lowerish or node.data is not None) and not no_redirect:
        if not (redirect and (samedir or redirect.startswith("/"))):
            lower_path = src.lowers[0][1] if lowerish else src.path
            if not samedir and len(lower_path) + 1 > m.config.redirect_max:
                raise Errno("EXDEV")  # fs/overlayfs/dir.c ovl_get_redirect: no room for the path in redirect_max
            node.xattrs["overlay.redirect"] = sname if samedir else "/" + lower_path
    elif is_dir and not lowerish and "overlay.opaque" not in node.xattrs and m.view.merged_dir(dfolder):
        node.xattrs["overlay.opaque"] = "y"
    if not samedir and ("overlay.origin" in node.xattrs or "overlay.redirect" in node.xattrs):
        dparent.xattrs["overlay.impure"] = "y"
    if pure_upper_target and any(posixpath.dirname(p) == to for p in m.upper if p):
        raise Errno("ENOTEMPTY")  # vfs_rename on the upper fs: whiteouts in the target count too
    dst_whiteout = m.upper.get(to)
    dst_whiteout = dst_whiteout if dst_whiteout is not None and dst_whiteout.whiteout else None
    if dst is not None:
        gone = m.view.inode(dst)
        if gone.ovl_nlink:
            gone.ovl_nlink -= 1
    m.remove_upper(to)
    for path in sorted(p for p in m.upper if p == src.path or p.startswith(src.path + "/")):
        m.upper[to + path[len(src.path):]] = m.upper.pop(path)
    # RENAME_WHITEOUT, or RENAME_EXCHANGE with a whiteout already at the target
    if positive and "no-whiteout-on-rename" not in m.faults:
        m.upper[src.path] = dst_whiteout if dst_whiteout is not None else Inode("chardev", 0, mtime=m.now)
    sparent.mtime = dparent.mtime = m.now


def _set_mode(node: Inode, op: Op) -> None:
    node.mode = int(op["mode"]) & 0o7777


def _set_mtime(node: Inode, op: Op) -> None:
    node.mtime = int(op["mtime"])


def _set_xattr(node: Inode, op: Op) -> None:
    node.xattrs[str(op["name"])] = str(op.get("value", ""))


def _readdir(m: Mount, op: Op) -> list[str]:
    found = m.looked_at(m.walk(str(op["path"]), follow=True))
    if not m.view.is_dir(found):
        raise Errno("ENOTDIR")
    listing = m.view.readdir(found)
    if "readdir-stale-after-change" in m.faults:
        return m.listings.setdefault(found.path, listing)
    return listing


def _readlink(m: Mount, op: Op) -> str:
    node = m.view.inode(m.looked_at(m.walk(str(op["path"]), follow=False)))
    if node.kind != "symlink":
        raise Errno("EINVAL")
    return node.target


def _mknod(m: Mount, op: Op) -> None:
    if op.get("kind", "fifo") != "fifo":
        raise ValueError(f"mknod of kind {op.get('kind')!r}: only fifo is in the contract")
    m.new_entry(str(op["path"]).strip("/"), Inode("fifo", int(op.get("mode", 0o644)) & 0o7777, mtime=m.now))


OPS: dict[str, Callable[[Mount, Op], Any]] = {
    "read": _read,
    "stat": lambda m, op: stat_value(m, m.looked_at(m.walk(str(op["path"]), follow=False))),
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
