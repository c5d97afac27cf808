"""ctypes wrappers for the system calls a container runtime needs and Python 3.11 lacks.

os.unshare and os.setns arrived in Python 3.12; mount(2), umount2(2), pivot_root(2), sethostname(2),
setdomainname(2), prctl(2) and capset(2) have no wrapper in any version. Each wrapper raises OSError
with the errno and the call's arguments, so a caller (the reference runtime, the probe's observations)
can say which call failed and why.

The probe re-exports these names from conformance/probe/syscalls.py; nothing here imports from the
rest of the package (conformance/ref is standard library only, see docs/ARCHITECTURE.md § Walls).
"""

from __future__ import annotations

import ctypes
import os


def _load_libc() -> ctypes.CDLL:
    # libc.so.6 first: ctypes.util.find_library runs ldconfig or gcc in a subprocess, which costs tens
    # of milliseconds on every start of the probe and of the runtime.
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library  # noqa: PLC0415

        return ctypes.CDLL(find_library("c"), use_errno=True)


LIBC = _load_libc()

# namespaces(7), clone(2): one flag per namespace type.
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags (include/uapi/linux/mount.h).
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_I_VERSION = 1 << 23
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

# umount2(2) flags.
MNT_FORCE = 1
MNT_DETACH = 2

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
SECCOMP_MODE_STRICT = 1
SECCOMP_MODE_FILTER = 2

# ioctl_ns(2): which namespace type an nsfs file descriptor refers to (a CLONE_NEW* value).
NS_GET_NSTYPE = 0xB703

# pivot_root has no libc wrapper in glibc; its number is per architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}

#: The kernel's names of namespaces (the entries of /proc/<pid>/ns) and their clone flags.
NAMESPACE_FLAGS = {
    "mnt": CLONE_NEWNS,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET,
    "user": CLONE_NEWUSER,
    "cgroup": CLONE_NEWCGROUP,
    "time": CLONE_NEWTIME,
}


def check(result: int, what: str) -> None:
    """Turn a libc call's -1 into OSError(errno, "what: strerror")."""
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    """unshare(2)."""
    check(LIBC.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): move this thread into the namespace `fd` refers to (nstype 0: any type)."""
    check(LIBC.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns({fd}, {nstype:#x})")


def namespace_type(fd: int) -> int:
    """The CLONE_NEW* type of the namespace an nsfs file descriptor refers to (ioctl_ns(2) NS_GET_NSTYPE)."""
    kind = int(LIBC.ioctl(ctypes.c_int(fd), ctypes.c_ulong(NS_GET_NSTYPE)))
    if kind < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ioctl(NS_GET_NSTYPE): {os.strerror(err)} (not a namespace file)")
    return kind


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    """mount(2)."""
    check(
        LIBC.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})",
    )


def umount(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    check(LIBC.umount2(target.encode(), ctypes.c_int(flags)), f"umount2({target!r})")


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2) through syscall(2)."""
    machine = os.uname().machine  # what platform.machine() reads, without importing platform
    number = _SYS_PIVOT_ROOT.get(machine)
    if number is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {machine}")
    check(LIBC.syscall(ctypes.c_long(number), new_root.encode(), put_old.encode()),
          f"pivot_root({new_root!r}, {put_old!r})")


def sethostname(name: str) -> None:
    """sethostname(2)."""
    raw = name.encode()
    check(LIBC.sethostname(raw, ctypes.c_size_t(len(raw))), f"sethostname({name!r})")


def setdomainname(name: str) -> None:
    """setdomainname(2)."""
    raw = name.encode()
    check(LIBC.setdomainname(raw, ctypes.c_size_t(len(raw))), f"setdomainname({name!r})")


def prctl(option: int, arg2: int | ctypes.c_void_p = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> None:
    """prctl(2) for the options that take integers or one pointer (passed as unsigned long, as the kernel reads)."""
    second = arg2 if isinstance(arg2, ctypes.c_void_p) else ctypes.c_ulong(arg2)
    check(LIBC.prctl(ctypes.c_int(option), second, ctypes.c_ulong(arg3), ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)),
          f"prctl({option}, {arg2})")


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32))


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) of this thread's three 64-bit capability sets (version 3: two 32-bit halves each)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)(*(_CapData((effective >> s) & 0xFFFFFFFF, (permitted >> s) & 0xFFFFFFFF,
                                     (inheritable >> s) & 0xFFFFFFFF) for s in (0, 32)))
    check(LIBC.capset(ctypes.byref(header), data), "capset")



CLOSE_RANGE_CLOEXEC = 4


def cloexec_from(first: int) -> None:
    """Mark every file descriptor from `first` up close-on-exec (close_range(2), Linux 5.11, glibc 2.34)."""
    try:
        check(LIBC.close_range(ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF), ctypes.c_int(CLOSE_RANGE_CLOEXEC)),
              "close_range")
    except (AttributeError, OSError):  # an older kernel or libc: one fcntl per open descriptor
        for name in os.listdir("/proc/self/fd"):
            if int(name) >= first:
                try:
                    os.set_inheritable(int(name), False)
                except OSError:
                    continue  # the directory's own descriptor, closed already
