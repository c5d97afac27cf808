"""Layer directories for an overlay mount, and the trees read back from it, in the overlay contract's forms.

Writing: each entry of conformance/scenarios/overlay.py becomes a real inode on the sandbox's tmpfs, in
the on-disk forms overlayfs reads (a whiteout is a character device 0/0, an opaque directory carries
the overlay.opaque xattr "y"). Reading: path -> node, with the upper dir's overlay xattrs named without
their namespace, so a trusted.* (root) and a user.* (userxattr) mount read the same.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

JsonDict = dict[str, Any]

MTIME = 1_600_000_000  # an entry's mtime when it names none, so that two builds of one scenario are equal

#: Overlay xattrs whose value is a file handle or a per-mount id: bytes no model can predict, shown as "*".
#: fs/overlayfs/overlayfs.h: ORIGIN and UPPER hold struct ovl_fh, UUID the upper fs's uuid.
OPAQUE_VALUES = frozenset({"overlay.origin", "overlay.upper", "overlay.uuid"})
_OVERLAY_PREFIXES = ("trusted.overlay.", "user.overlay.")  # the second one with userxattr (overlayfs.rst)


def overlay_xattr(name: str, *, userxattr: bool) -> str:
    """The full name of an overlay xattr: user.overlay.* on a userxattr mount, trusted.overlay.* otherwise."""
    return f"{'user' if userxattr else 'trusted'}.overlay.{name}"


def build_layer(base: str, entries: list[JsonDict], *, userxattr: bool) -> None:
    """Write entries, in order, under base; mtimes last, because creating a child changes its dir's mtime."""
    os.makedirs(base, 0o755, exist_ok=True)
    times: list[tuple[str, int]] = []
    for entry in entries:
        path = os.path.join(base, entry["name"].strip("/"))
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        kind = entry.get("type", "file")
        if kind == "hardlink":  # shares the target's inode: its attributes are the target's
            os.link(os.path.join(base, entry["target"].strip("/")), path)
            continue
        _create(path, kind, entry)
        os.chown(path, entry.get("uid", 0), entry.get("gid", 0), follow_symlinks=False)
        if kind != "symlink":  # after chown, which clears set-id bits
            os.chmod(path, entry.get("mode", _default_mode(kind)))
        xattrs = dict(entry.get("xattrs") or {})
        if entry.get("opaque"):
            xattrs[overlay_xattr("opaque", userxattr=userxattr)] = "y"
        for name, value in xattrs.items():
            os.setxattr(path, name, value.encode(), follow_symlinks=False)
        times.append((path, entry.get("mtime", MTIME)))
    for path, mtime in times:
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def _default_mode(kind: str) -> int:
    # The kernel makes its whiteouts with mode 0 (fs/overlayfs/dir.c: S_IFCHR | WHITEOUT_MODE).
    return {"dir": 0o755, "whiteout": 0}.get(kind, 0o644)


def _create(path: str, kind: str, entry: JsonDict) -> None:
    if kind == "file":
        with open(path, "wb") as handle:
            handle.write(str(entry.get("content", "")).encode())
    elif kind == "dir":
        if not os.path.isdir(path):  # it may already be there as the parent of an earlier entry
            os.mkdir(path)
    elif kind == "symlink":
        os.symlink(entry["target"], path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "whiteout":
        os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
    else:
        raise ValueError(f"unknown overlay entry type {kind!r} for {entry.get('name')!r}")


def read_tree(base: str, *, xattrs: bool) -> JsonDict:
    """Every entry under base (not base itself), path -> node; with xattrs, the overlay and user.* ones.

    A name that readdir lists but lstat cannot find is {"type": "unreachable", "errno": ...}: the kernel
    does that for a whiteout inside a lower directory that is not merged (its readdir is the lower
    dir's own, fs/overlayfs/readdir.c ovl_dir_is_real), and a model must be able to say so too.
    """
    tree: JsonDict = {}
    for directory, dirs, files in os.walk(base):
        for name in dirs + files:
            full = os.path.join(directory, name)
            try:
                tree[os.path.relpath(full, base)] = node(full, xattrs=xattrs)
            except OSError as exc:
                tree[os.path.relpath(full, base)] = {"type": "unreachable",
                                                     "errno": errno.errorcode.get(exc.errno or 0, str(exc.errno))}
    return dict(sorted(tree.items()))


def file_type(mode: int) -> str:
    """The contract's name of an inode type."""
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "chardev")):
        if test(mode):
            return name
    return "other"


def node(path: str, *, xattrs: bool) -> JsonDict:
    """One inode as the contract's node (lstat: a symlink is itself)."""
    st = os.lstat(path)
    kind = file_type(st.st_mode)
    found: JsonDict = {"type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if kind == "file":
        with open(path, "rb") as handle:
            found["content"] = handle.read().decode(errors="replace")
    elif kind == "symlink":
        found["target"] = os.readlink(path)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        found["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    if kind != "dir":
        found["nlink"] = st.st_nlink
    found["mtime"] = int(st.st_mtime)
    if xattrs:
        found["xattrs"] = normalised_xattrs(path)
    return found


def normalised_xattrs(path: str) -> dict[str, str]:
    """Overlay xattrs as "overlay.X" whatever their namespace, handles as "*", user.* as they are; no others."""
    found: dict[str, str] = {}
    for name in sorted(os.listxattr(path, follow_symlinks=False)):
        key = next(("overlay." + name[len(p):] for p in _OVERLAY_PREFIXES if name.startswith(p)), None)
        if key is None and name.startswith("user."):
            key = name
        if key is None:  # security.*, system.*: the host's business, not the overlay's
            continue
        value = os.getxattr(path, name, follow_symlinks=False)
        found[key] = "*" if key in OPAQUE_VALUES else value.decode(errors="replace")
    return found
