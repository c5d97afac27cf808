"""Reading a tar entry's attributes, and setting them on what was just created without following links.

Timestamps come from PAX records as exact decimals (a float loses nanoseconds); extreme ones are
clamped, not an error (H-31, moby's boundTime). Extended attributes come from PAX `SCHILY.xattr.*`
records, whose values are bytes that tarfile hands over as surrogate-escaped text.
"""

from __future__ import annotations

import decimal
import errno
import os
from collections.abc import Mapping
from typing import Protocol

XATTR_PAX = "SCHILY.xattr."

#: overlayfs keeps its own state in these xattrs; applied raw, a rootfs later used as a lowerdir would
#: obey a layer's forged redirect or metacopy (overlayfs.rst; H-15). They are never applied.
OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")

#: Host-specific labels: not image content, and never removed from a directory a layer updates.
HOST_XATTRS = ("security.selinux",)

#: setxattr errors meaning "this filesystem or this user cannot have it": noted, not fatal (layer.md:
#: xattrs are applied "where supported").
XATTR_UNSUPPORTED = (errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP)

_NS = 10**9
_NS_MAX = 2**63 - 1


class Entry(Protocol):
    """What these helpers read of a tar entry: tarread.Member has it, and so does tarfile.TarInfo."""

    @property
    def mtime(self) -> float:
        """Seconds since the epoch, from the header."""
        ...

    @property
    def pax_headers(self) -> Mapping[str, str]:
        """The entry's PAX records (global ones included)."""
        ...


def entry_times(member: Entry) -> tuple[int, int]:
    """(atime, mtime) in ns; atime is mtime unless a PAX record says otherwise."""
    pax = member.pax_headers
    if not pax and type(member.mtime) is int:  # the common case, without Decimal (a third of an apply's time)
        mtime = max(-_NS_MAX, min(_NS_MAX, member.mtime * _NS))
        return mtime, mtime
    mtime = _ns(pax.get("mtime"), member.mtime)
    atime = pax.get("atime")
    return (mtime if atime is None else _ns(atime, member.mtime)), mtime


def _ns(text: str | None, fallback: float) -> int:
    for value in (text, fallback):
        if value is None:
            continue
        try:
            ns = int(decimal.Decimal(value) * _NS)
        except (decimal.InvalidOperation, ValueError, OverflowError):
            continue
        return max(-_NS_MAX, min(_NS_MAX, ns))
    return 0


def entry_xattrs(member: Entry) -> tuple[dict[str, bytes], list[str]]:
    """The entry's xattrs to apply, and the overlay ones it carried that must not be."""
    wanted: dict[str, bytes] = {}
    refused: list[str] = []
    for key, value in member.pax_headers.items():
        if key.startswith(XATTR_PAX):
            name = key[len(XATTR_PAX):]
            if name.startswith(OVERLAY_XATTRS):
                refused.append(name)
            else:
                wanted[name] = value.encode("utf-8", "surrogateescape")
    return wanted, refused


def list_xattrs(target: int | str, follow: bool) -> list[str]:
    """The xattr names of an fd or path ([] where the filesystem has none)."""
    try:
        return os.listxattr(target, follow_symlinks=follow)
    except OSError as err:
        if err.errno in XATTR_UNSUPPORTED:
            return []
        raise


def chmod_node(parent: int, name: str, mode: int) -> None:
    """Set a device's or fifo's mode without opening it (a fifo would block) or following a link.

    An O_PATH fd names the node itself; chmod through its /proc/self/fd link reaches that inode.
    """
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except OSError:
        os.chmod(name, mode, dir_fd=parent)
        return
    try:
        os.chmod(f"/proc/self/fd/{fd}", mode)
    except FileNotFoundError:  # no /proc: the node was just made here, by this process
        os.chmod(name, mode, dir_fd=parent)
    finally:
        os.close(fd)


def os_reason(err: OSError) -> str:
    """`Permission denied (EACCES)`: the strerror and the errno name, for an error message."""
    name = errno.errorcode.get(err.errno or 0, "")
    return f"{err.strerror or err} ({name})" if name else str(err)
