"""The system calls the probe makes that Python 3.11 lacks: the reference runtime's wrappers, plus seccomp.

The wrappers and constants live in conformance/ref/nsapi.py (the reference runtime needs them too, and
ref never imports the probe); they are re-exported here under the names the probe has always used.
Each wrapper raises OSError with the errno and the call's arguments, so an observation can carry the
errno name the kernel gave.
"""

from __future__ import annotations

import ctypes

from conformance.ref.nsapi import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWTIME,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    LIBC,
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_SHARED,
    MS_SLAVE,
    NAMESPACE_FLAGS,
    PR_SET_DUMPABLE,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_SECCOMP,
    SECCOMP_MODE_FILTER,
    SECCOMP_MODE_STRICT,
    check,
    mount,
    pivot_root,
    prctl,
    sethostname,
    setns,
    umount,
    unshare,
)

__all__ = [
    "CLONE_NEWCGROUP", "CLONE_NEWIPC", "CLONE_NEWNET", "CLONE_NEWNS", "CLONE_NEWPID", "CLONE_NEWTIME", "CLONE_NEWUSER",
    "CLONE_NEWUTS", "MNT_DETACH", "MS_BIND", "MS_NODEV", "MS_NOEXEC", "MS_NOSUID", "MS_PRIVATE", "MS_RDONLY", "MS_REC",
    "MS_SHARED", "MS_SLAVE", "NAMESPACE_FLAGS", "PR_SET_DUMPABLE", "PR_SET_NO_NEW_PRIVS", "PR_SET_SECCOMP",
    "SECCOMP_MODE_FILTER", "SECCOMP_MODE_STRICT", "mount", "pivot_root", "prctl", "seccomp_allow_all",
    "seccomp_strict", "sethostname", "setns", "umount", "unshare",
]


class _SockFilter(ctypes.Structure):
    _fields_ = (("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint))


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


def seccomp_allow_all() -> None:
    """Install a one-instruction seccomp filter that allows every call (BPF_RET|BPF_K, SECCOMP_RET_ALLOW)."""
    program = (_SockFilter * 1)(_SockFilter(0x06, 0, 0, 0x7FFF0000))
    fprog = _SockFprog(1, program)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    check(
        LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
        "prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)",
    )


def seccomp_strict() -> None:
    """Enter strict seccomp mode: only read, write, _exit and sigreturn stay allowed."""
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)
