"""Who the container's process is and what it may do: rlimits, capabilities, groups, gid, uid, no_new_privs.

Applied last, just before execve(2), in the order runc's init uses (libcontainer/init_linux.go
finalizeNamespace), because each step needs privileges the next one gives up:

1. rlimits (config.md § POSIX process: "the runtime MUST generate an error for any values which cannot
   be mapped"): raising a hard limit needs CAP_SYS_RESOURCE, so before capabilities go;
2. the bounding set is cut to `capabilities.bounding` (PR_CAPBSET_DROP needs CAP_SETPCAP), and
   PR_SET_KEEPCAPS keeps the permitted set across the uid change (capabilities(7) § "Effect of user ID
   changes on capabilities": otherwise a switch from uid 0 to another uid clears it);
3. setgroups(additionalGids), setgid, setuid (config.md § User); with a user namespace whose
   setgroups file says "deny" (user_namespaces(7)) only an empty list can be had;
4. capset(2) of effective, permitted and inheritable, then the ambient set (PR_CAP_AMBIENT): after
   execve a process that is not uid 0 keeps only its ambient capabilities (capabilities(7)
   § "Transformation of capabilities during execve()"); uid 0 gets its bounding set back;
5. no_new_privs (config.md: "noNewPrivileges ... prevents the process from gaining additional
   privileges"), last, so nothing before it is affected.

With no `capabilities` object the sets are left as they are, as runc does: root keeps everything.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from typing import TYPE_CHECKING

from conformance.ref import nsapi

if TYPE_CHECKING:
    from conformance.ref.runspec import Process

#: capabilities(7), by number (include/uapi/linux/capability.h).
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
_NUMBERS = {name: number for number, name in enumerate(CAPABILITIES)}

#: config.md § POSIX process rlimits: the RLIMIT_* names this Python knows.
RLIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}


def last_capability() -> int:
    """The highest capability number this kernel knows (read before pivot_root, from the host's /proc)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return len(CAPABILITIES) - 1


def capability_mask(names: Iterable[str], last: int) -> int:
    """The bit mask of named capabilities; ones this kernel does not know are left out (runc warns the same)."""
    return sum(1 << _NUMBERS[name] for name in set(names) if _NUMBERS[name] <= last)


def apply_credentials(process: Process, *, last_cap: int, setgroups_allowed: bool) -> None:
    """Steps 1-5 above; raises OSError naming the step that failed."""
    for limit in process.rlimits:
        resource.setrlimit(RLIMITS[limit.type], (limit.soft, limit.hard))
    caps = process.capabilities
    if caps is not None:
        bounding = capability_mask(caps.bounding, last_cap)
        for number in range(last_cap + 1):
            if not bounding & (1 << number):
                nsapi.prctl(nsapi.PR_CAPBSET_DROP, number)
        nsapi.prctl(nsapi.PR_SET_KEEPCAPS, 1)
    user = process.user
    if setgroups_allowed:
        os.setgroups(list(user.additional_gids))
    elif user.additional_gids:
        raise OSError(1, "setgroups: the user namespace's setgroups is 'deny', process.user.additionalGids "
                         "cannot be set")
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    os.umask(0o022 if user.umask is None else user.umask)
    if caps is not None:
        nsapi.prctl(nsapi.PR_SET_KEEPCAPS, 0)
        nsapi.capset(capability_mask(caps.effective, last_cap), capability_mask(caps.permitted, last_cap),
                     capability_mask(caps.inheritable, last_cap))
        for name in caps.ambient:
            number = _NUMBERS[name]
            if number <= last_cap and name in caps.permitted and name in caps.inheritable:
                # The kernel raises an ambient capability only if it is permitted and inheritable
                # (capabilities(7) § Ambient); runc's default spec lists ambient ones that are not
                # inheritable, and runc skips them as well.
                nsapi.prctl(nsapi.PR_CAP_AMBIENT, nsapi.PR_CAP_AMBIENT_RAISE, number)
    if process.no_new_privileges:
        nsapi.prctl(nsapi.PR_SET_NO_NEW_PRIVS, 1)
