"""The operations of an overlay scenario, run on a merged view; a failed operation is data, not an error.

Each op is one system call (or open + write) as conformance/scenarios/overlay.py names it, so what the
kernel or fuse-overlayfs answers (EXDEV for a directory rename without redirect_dir, ENOENT for a
whiteout...) lands in the observation as an errno name beside the op's value.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from typing import Any

from conformance.probe.overlay_trees import file_type

JsonDict = dict[str, Any]


def check_ops(ops: list[JsonDict]) -> None:
    """Refuse a scenario with an op of an unknown kind before anything is built: it is broken, not observed."""
    for op in ops:
        if op.get("op") not in _OPS:
            raise ValueError(f"unknown overlay op {op.get('op')!r}; known: {', '.join(sorted(_OPS))}")


def run_ops(root: str, ops: list[JsonDict]) -> list[JsonDict]:
    """Run ops (checked by check_ops) in order under root; one {errno, value} each."""
    results: list[JsonDict] = []
    for op in ops:
        try:
            results.append({"errno": None, "value": _OPS[op["op"]](root, op)})
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            results.append({"errno": name, "value": None})
    return results


def _path(root: str, op: JsonDict, key: str = "path") -> str:
    return os.path.join(root, str(op[key]).lstrip("/"))


def _write(path: str, flags: int, content: str, mode: int = 0o644) -> None:
    fd = os.open(path, flags, mode)
    try:
        os.write(fd, content.encode())
    finally:
        os.close(fd)


def _read(root: str, op: JsonDict) -> str:
    # O_NONBLOCK: a read of a fifo (no writer) answers at once instead of hanging the probe.
    fd = os.open(_path(root, op), os.O_RDONLY | os.O_NONBLOCK)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def _stat(root: str, op: JsonDict) -> JsonDict:
    st = os.lstat(_path(root, op))
    return {"type": file_type(st.st_mode), "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
            "gid": st.st_gid, "size": st.st_size, "nlink": st.st_nlink}


def _create(root: str, op: JsonDict) -> None:
    _write(_path(root, op), os.O_CREAT | os.O_EXCL | os.O_WRONLY, op.get("content", ""), op.get("mode", 0o644))


def _mknod(root: str, op: JsonDict) -> None:
    if op.get("kind", "fifo") != "fifo":
        raise ValueError(f"mknod of kind {op.get('kind')!r}: only fifo is in the contract")
    os.mkfifo(_path(root, op), op.get("mode", 0o644))


_OPS: dict[str, Callable[[str, JsonDict], Any]] = {
    "read": _read,
    "stat": _stat,
    "readdir": lambda root, op: sorted(os.listdir(_path(root, op))),
    "readlink": lambda root, op: os.readlink(_path(root, op)),
    "create": _create,
    "write": lambda root, op: _write(_path(root, op), os.O_WRONLY | os.O_TRUNC, op.get("content", "")),
    "append": lambda root, op: _write(_path(root, op), os.O_WRONLY | os.O_APPEND, op.get("content", "")),
    "truncate": lambda root, op: os.truncate(_path(root, op), op["size"]),
    "chmod": lambda root, op: os.chmod(_path(root, op), op["mode"]),
    "chown": lambda root, op: os.chown(_path(root, op), op.get("uid", -1), op.get("gid", -1)),
    "utimes": lambda root, op: os.utime(_path(root, op), (op["mtime"], op["mtime"])),
    "setxattr": lambda root, op: os.setxattr(_path(root, op), op["name"], str(op.get("value", "")).encode()),
    "unlink": lambda root, op: os.unlink(_path(root, op)),
    "rmdir": lambda root, op: os.rmdir(_path(root, op)),
    "mkdir": lambda root, op: os.mkdir(_path(root, op), op.get("mode", 0o755)),
    "rename": lambda root, op: os.rename(_path(root, op), _path(root, op, "to")),
    "link": lambda root, op: os.link(_path(root, op), _path(root, op, "to"), follow_symlinks=False),
    "symlink": lambda root, op: os.symlink(op["target"], _path(root, op)),
    "mknod": _mknod,
}
