"""Thin ctypes wrappers for the system calls Python 3.11 lacks (os.unshare arrived in 3.12).

Each wrapper raises OSError with the errno and the call's arguments, so an observation can carry the
errno name the kernel gave.
"""

from __future__ import annotations

import ctypes
import os
import platform


def _load_libc() -> ctypes.CDLL:
    # libc.so.6 first: ctypes.util.find_library runs ldconfig or gcc in a subprocess, which costs tens
    # of milliseconds on every probe start.
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library  # noqa: PLC0415

        return ctypes.CDLL(find_library("c"), use_errno=True)


_libc = _load_libc()

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_STRICT = 1
SECCOMP_MODE_FILTER = 2

# pivot_root has no libc wrapper in glibc; its number is per architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}

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


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    """unshare(2)."""
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    """mount(2)."""
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount({source!r}, {target!r}, {fstype!r}, {data!r})",
    )


def umount(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount2({target!r})")


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2) through syscall(2)."""
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {platform.machine()}")
    _check(_libc.syscall(ctypes.c_long(number), new_root.encode(), put_old.encode()), "pivot_root")


def sethostname(name: str) -> None:
    """sethostname(2)."""
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), f"sethostname({name!r})")


def prctl(option: int, arg2: int | ctypes.c_void_p = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> None:
    """prctl(2) for the options that take integers or one pointer."""
    _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


class _SockFilter(ctypes.Structure):
    _fields_ = (("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint))


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


def seccomp_allow_all() -> None:
    """Install a one-instruction seccomp filter that allows every call (BPF_RET|BPF_K, SECCOMP_RET_ALLOW)."""
    program = (_SockFilter * 1)(_SockFilter(0x06, 0, 0, 0x7FFF0000))
    fprog = _SockFprog(1, program)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    _check(
        _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
        "prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)",
    )


def seccomp_strict() -> None:
    """Enter strict seccomp mode: only read, write, _exit and sigreturn stay allowed."""
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)
