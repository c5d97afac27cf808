"""A config.json mount's `options`, turned into what mount(2) takes: flags, propagation, filesystem data.

runtime-spec config.md § Mounts: "options (array of strings, OPTIONAL) Mount options of the filesystem
to be used"; on Linux the runtime "MUST support" the mount(8) options "that can be passed to the
mount(2) system call through the flags", the propagation types, and passes every other option as
data to the filesystem. The table is mount(8)'s "FILESYSTEM-INDEPENDENT MOUNT OPTIONS", the same runc
keeps in libcontainer/specconv (mountFlags, mountPropagationMapping).

Bind mounts are special (mount(2) "Creating a bind mount"): the kernel ignores every flag but MS_REC
on the bind itself, so `ro`, `nosuid`... need a second call with MS_REMOUNT|MS_BIND, and each
propagation type (`rprivate`...) a call of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conformance.ref import nsapi

# option -> (clears the flag instead of setting it, flag)
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, nsapi.MS_SYNCHRONOUS),
    "atime": (True, nsapi.MS_NOATIME),
    "bind": (False, nsapi.MS_BIND),
    "defaults": (False, 0),
    "dev": (True, nsapi.MS_NODEV),
    "diratime": (True, nsapi.MS_NODIRATIME),
    "dirsync": (False, nsapi.MS_DIRSYNC),
    "exec": (True, nsapi.MS_NOEXEC),
    "iversion": (False, nsapi.MS_I_VERSION),
    "lazytime": (False, nsapi.MS_LAZYTIME),
    "loud": (True, nsapi.MS_SILENT),
    "mand": (False, nsapi.MS_MANDLOCK),
    "noatime": (False, nsapi.MS_NOATIME),
    "nodev": (False, nsapi.MS_NODEV),
    "nodiratime": (False, nsapi.MS_NODIRATIME),
    "noexec": (False, nsapi.MS_NOEXEC),
    "noiversion": (True, nsapi.MS_I_VERSION),
    "nolazytime": (True, nsapi.MS_LAZYTIME),
    "nomand": (True, nsapi.MS_MANDLOCK),
    "norelatime": (True, nsapi.MS_RELATIME),
    "nostrictatime": (True, nsapi.MS_STRICTATIME),
    "nosuid": (False, nsapi.MS_NOSUID),
    "nosymfollow": (False, nsapi.MS_NOSYMFOLLOW),
    "rbind": (False, nsapi.MS_BIND | nsapi.MS_REC),
    "relatime": (False, nsapi.MS_RELATIME),
    "remount": (False, nsapi.MS_REMOUNT),
    "ro": (False, nsapi.MS_RDONLY),
    "rw": (True, nsapi.MS_RDONLY),
    "silent": (False, nsapi.MS_SILENT),
    "strictatime": (False, nsapi.MS_STRICTATIME),
    "suid": (True, nsapi.MS_NOSUID),
    "sync": (False, nsapi.MS_SYNCHRONOUS),
}

#: Propagation types (mount_namespaces(7) § Shared subtrees); the r- forms apply to the whole subtree.
PROPAGATION: dict[str, int] = {
    "private": nsapi.MS_PRIVATE,
    "rprivate": nsapi.MS_PRIVATE | nsapi.MS_REC,
    "shared": nsapi.MS_SHARED,
    "rshared": nsapi.MS_SHARED | nsapi.MS_REC,
    "slave": nsapi.MS_SLAVE,
    "rslave": nsapi.MS_SLAVE | nsapi.MS_REC,
    "unbindable": nsapi.MS_UNBINDABLE,
    "runbindable": nsapi.MS_UNBINDABLE | nsapi.MS_REC,
}

#: Flags a bind remount keeps from the mount it copies: in a user namespace the kernel locks them
#: (mount_namespaces(7) § Restrictions: "MS_RDONLY, MS_NOSUID, MS_NOEXEC, and the atime flags ... become
#: locked"), and a remount that drops one fails with EPERM.
ST_LOCKED = {1: nsapi.MS_RDONLY, 2: nsapi.MS_NOSUID, 4: nsapi.MS_NODEV, 8: nsapi.MS_NOEXEC, 1024: nsapi.MS_NOATIME,
             2048: nsapi.MS_NODIRATIME, 4096: nsapi.MS_RELATIME}


@dataclass(frozen=True, slots=True)
class MountFlags:
    """One mount's options, split the way mount(2) wants them."""

    flags: int  # for the first mount(2) call (MS_BIND, MS_BIND|MS_REC for bind mounts)
    propagation: tuple[int, ...]  # one mount(2) call each, after the mount
    data: str  # the filesystem-specific options, comma-separated
    bind: bool

    @property
    def remount_flags(self) -> int:
        """What a bind mount's second call (MS_REMOUNT|MS_BIND) sets; 0 when none is needed."""
        return self.flags & ~(nsapi.MS_BIND | nsapi.MS_REC | nsapi.MS_REMOUNT)


def parse_options(options: Sequence[str], fstype: str | None) -> MountFlags:
    """Split `options` into flags, propagation and data; type "bind" makes a bind mount too (runc does)."""
    flags = 0
    propagation: list[int] = []
    data: list[str] = []
    for option in options:
        if option in _FLAGS:
            clear, flag = _FLAGS[option]
            flags = flags & ~flag if clear else flags | flag
        elif option in PROPAGATION:
            propagation.append(PROPAGATION[option])
        else:
            data.append(option)
    bind = bool(flags & nsapi.MS_BIND) or fstype == "bind"
    if bind:
        flags |= nsapi.MS_BIND
    return MountFlags(flags, tuple(propagation), ",".join(data), bind)


def locked_flags(statvfs_flags: int) -> int:
    """The MS_* flags of an existing mount that a bind remount must keep (from os.statvfs().f_flag)."""
    return sum(flag for bit, flag in ST_LOCKED.items() if statvfs_flags & bit)
