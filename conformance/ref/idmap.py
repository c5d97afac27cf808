"""User namespace id maps, written by the runtime from outside the namespace.

user_namespaces(7) § "User and group ID mappings: uid_map and gid_map": each file is written once,
in a single write(2), by a process with CAP_SETUID (CAP_SETGID for gid_map) in the parent user
namespace; lines are "ID-inside-ns ID-outside-ns length". A process in the new namespace cannot map
ids it does not own, which is why the runtime, still root outside, writes the maps for the child while
the child waits on a pipe (runc's nsexec does the same through its sync socket).

§ "Interaction with system calls that change process UIDs or GIDs" and "/proc/[pid]/setgroups": a
writer without CAP_SETGID in the parent namespace must write "deny" to setgroups before gid_map; root
need not, and then setgroups(2) keeps working in the container (process.user.additionalGids).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from conformance.ref.runspec import IdMapping


def map_text(mappings: Sequence[IdMapping]) -> str:
    """The uid_map/gid_map content for `mappings`."""
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)


def write_maps(pid: int, uid_mappings: Sequence[IdMapping], gid_mappings: Sequence[IdMapping]) -> None:
    """Write /proc/<pid>/{setgroups,uid_map,gid_map}; OSError says which file and which mapping failed."""
    if os.geteuid() != 0:  # unprivileged: the kernel allows a gid_map only after "deny" (user_namespaces(7))
        _write(f"/proc/{pid}/setgroups", "deny")
    for name, mappings in (("uid_map", uid_mappings), ("gid_map", gid_mappings)):
        _write(f"/proc/{pid}/{name}", map_text(mappings))


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())  # one write(2): the kernel takes the whole map at once or nothing
    except OSError as err:
        raise OSError(err.errno, f"writing {text.strip()!r} to {path}: {err.strerror} (user_namespaces(7): "
                                 "ranges must not overlap and the writer must own the host ids)") from None
    finally:
        os.close(fd)


def setgroups_allowed() -> bool:
    """Whether setgroups(2) works in this process's user namespace ("allow" in /proc/self/setgroups)."""
    try:
        with open("/proc/self/setgroups", "rb") as handle:
            return handle.read().strip() == b"allow"
    except FileNotFoundError:  # kernels before 3.19
        return True
