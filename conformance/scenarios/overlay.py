"""Scenarios of the overlay area: layer trees, mount options and operations on the merged view.

One scenario kind, "overlay.run", is run by every overlay implementation: the reference model
(conformance/ref/overlay*, no mount), the kernel (a real `mount -t overlay`) and fuse-overlayfs. They
all answer with the same observation, so a test (or a property test) compares them field for field.

The contract (plain JSON both ways):

params = {
  "lowers":  [[entry, ...], ...]   lower layers, TOP FIRST (as in lowerdir=top:...:bottom), each a
                                   list of entries written into its own directory in order;
  "data_lowers": [[entry, ...], ...]   optional: data-only lower layers (lowerdir=...::data1::data2, 6.5+),
                                   below every lower layer and never merged: only a lower metacopy file
                                   ("trusted.overlay.metacopy") reaches them, as the file at its absolute
                                   "trusted.overlay.redirect" path;
  "upper":   [entry, ...]          what the upper dir holds before the mount (often empty);
  "options": {"redirect_dir": "off"|"on"|"follow"|"nofollow", "metacopy": "off"|"on",
              "index": "off"|"on", "userxattr": bool, "xino": "off"|"auto"|"on"}
                                   only the keys given are passed to the mount; absent = kernel default,
                                   which the model takes from the facts (`overlay.params`) it is given;
  "ops":     [op, ...]             run in order on the merged view; an op's failure is an observation
}

entry (as in the layers area, plus the overlay forms of deletion):
  {"name", "type": "file"|"dir"|"symlink"|"hardlink"|"fifo"|"whiteout", "content", "mode", "uid",
   "gid", "target" (symlink text or hardlink source name), "mtime", "xattrs": {name: text},
   "opaque": true (dir only: the overlay opaque xattr "y")}
  "whiteout" is the overlay whiteout: a character device 0/0 named `name`.

op (paths are relative to the merged root):
  {"op": "read", "path"}                          value: the content (text)
  {"op": "stat", "path"}                          value: {type, mode, uid, gid, size, nlink} (lstat)
  {"op": "readdir", "path"}                       value: sorted names, without . and ..
  {"op": "readlink", "path"}                      value: the target
  {"op": "create", "path", "content", "mode"}     open(O_CREAT|O_EXCL|O_WRONLY), write
  {"op": "write", "path", "content"}              open(O_WRONLY|O_TRUNC) of an existing file, write
  {"op": "append", "path", "content"}             open(O_WRONLY|O_APPEND), write
  {"op": "truncate", "path", "size"}
  {"op": "chmod", "path", "mode"} / {"op": "chown", "path", "uid", "gid"} / {"op": "utimes", "path", "mtime"}
  {"op": "setxattr", "path", "name", "value"}     user.* names
  {"op": "unlink", "path"} / {"op": "rmdir", "path"} / {"op": "mkdir", "path", "mode"}
  {"op": "rename", "path", "to"}                  rename(2), no flags
  {"op": "link", "path", "to"}                    link(path, to)
  {"op": "symlink", "path", "target"}             symlink(target, path)
  {"op": "mknod", "path", "kind": "fifo"}

observation = {
  "mount_error": null | "EINVAL" | ...            the errno name when the mount itself failed
                                                  (then nothing else is filled in);
  "results":  [{"errno": null | "ENOENT" | "EXDEV" | ..., "value": ...}, ...]   one per op;
  "merged":   {path: node}                        the merged view after the ops (lstat, no xattrs);
  "upper":    {path: node}                        the upper dir after the ops (and the unmount);
}
node = {"type": "file"|"dir"|"symlink"|"fifo"|"chardev"|"other", "mode", "uid", "gid",
        "content" (files: the text), "target" (symlinks), "rdev": [major, minor] (devices),
        "nlink" (non-directories), "mtime" (seconds),
        "xattrs": {name: text}}                   in "upper" only: the overlay xattrs with their
                                                  namespace dropped ("overlay.opaque", "overlay.redirect",
                                                  "overlay.metacopy", "overlay.origin" (value "*": its
                                                  bytes are a file handle), ...) and user.* ones as they are.
"""

from __future__ import annotations

from typing import Any

from conformance.scenarios import Scenario

Entry = dict[str, Any]
Op = dict[str, Any]


def whiteout(name: str) -> Entry:
    """The overlay whiteout of `name`: a character device 0/0."""
    return {"name": name, "type": "whiteout"}


def opaque_dir(name: str, **attrs: Any) -> Entry:
    """A directory marked opaque (overlay.opaque=y): it hides the lower layers' entries of its name."""
    return {"name": name, "type": "dir", "opaque": True, **attrs}


def op(kind: str, path: str, **args: Any) -> Op:
    """One operation on the merged view."""
    return {"op": kind, "path": path, **args}


def run(lowers: list[list[Entry]], ops: list[Op] | None = None, *, upper: list[Entry] | None = None,
        options: dict[str, Any] | None = None, data_lowers: list[list[Entry]] | None = None) -> Scenario:
    """Mount lowers (top first) with an upper dir, run the ops on the merged view, look at both trees."""
    params: dict[str, Any] = {"lowers": [list(layer) for layer in lowers], "upper": list(upper or []),
                              "options": dict(options or {}), "ops": list(ops or [])}
    if data_lowers:
        params["data_lowers"] = [list(layer) for layer in data_lowers]
    return Scenario("overlay.run", params)


def metacopy_file(name: str, size: int, data_path: str | None = None, **attrs: Any) -> Entry:
    """A metadata-only file of `size` bytes whose data is below it.

    The data is at data_path (an absolute redirect into a lower or data-only layer) or, without one, at its
    own name in the next layer that has it.
    """
    xattrs = {"trusted.overlay.metacopy": ""}
    if data_path is not None:
        xattrs["trusted.overlay.redirect"] = "/" + data_path.strip("/")
    return {"name": name, "type": "file", "content": "\0" * size, "xattrs": xattrs, **attrs}
