"""Which cgroup hierarchies a host mounts, and where a process sits in each: v1, v2 or hybrid.

A host is **v2** (one cgroup2 hierarchy, usually at /sys/fs/cgroup, holding every controller), **v1**
(one `cgroup` hierarchy per controller or group of controllers: memory, pids, cpu,cpuacct...) or
**hybrid** (v1 controllers plus a cgroup2 hierarchy without them, usually at /sys/fs/cgroup/unified,
that only tracks membership). The layout is read from the filesystem types in /proc/self/mountinfo,
as runc's `IsCgroup2UnifiedMode` and moby's check-config.sh do, never from the distribution or the
kernel version (ns_cgroups research § 3.1: kernels from 6.12 may be built without v1 memory and
cpuset at all).

`detect_layout(mountinfo, root)` takes the file and a prefix for the mount points so tests can hand
it a fake tree; `own_cgroups(path)` reads /proc/<pid>/cgroup, for cgroupsPath values relative to the
runtime's own cgroup; `cgroup_dirs(layout, path)` says where a cgroupsPath lands in each hierarchy
(cgmanager.py's module doc gives the rules, runc's).
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass

from conformance.ref.errors import RefError
from conformance.ref.specread import ConfigError

#: The v1 controllers a `cgroup` mount may carry in its super options (cgroups(7)).
V1_CONTROLLERS = frozenset({"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "blkio",
                            "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc"})
#: The key of the cgroup2 hierarchy in the maps below (v1 hierarchies are keyed by controller).
UNIFIED = "unified"
#: The v1 controllers a container gets a directory for (devices is left out: no device rules are applied).
V1_JOINED = ("memory", "pids", "cpu", "cpuacct", "cpuset", "freezer")


class CgroupError(RefError):
    """A cgroup cannot be found, made, limited, frozen or removed: the path, the file, what the kernel said."""


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """One mounted cgroup hierarchy.

    `root` is the mountinfo root field: "/" normally, a deeper path when the mount shows a subtree (a
    container's bind of its own cgroup) or "/.." forms in a cgroup namespace. `controllers` are the v1
    ones in the super options, or for v2 those in the mount point's cgroup.controllers.
    """

    version: int
    mountpoint: str
    root: str
    controllers: frozenset[str]

    @property
    def key(self) -> str:
        """How maps of this module name the hierarchy: "unified" for v2, else its controllers joined by ","."""
        return UNIFIED if self.version == 2 else ",".join(sorted(self.controllers))


@dataclass(frozen=True, slots=True)
class Layout:
    """The host's cgroup hierarchies and what they add up to."""

    mode: str  # "v1" | "v2" | "hybrid"
    hierarchies: tuple[Hierarchy, ...]

    @property
    def unified(self) -> Hierarchy | None:
        """The cgroup2 hierarchy (all controllers on v2, membership only on hybrid), if mounted."""
        return next((h for h in self.hierarchies if h.version == 2), None)

    @property
    def limits_version(self) -> int:
        """The version whose files hold the limits: 2 on v2, 1 on v1 and hybrid."""
        return 2 if self.mode == "v2" else 1

    def hierarchy_for(self, controller: str) -> Hierarchy | None:
        """The hierarchy that has `controller`: on v2 the unified one; on v1 and hybrid the v1 one, if mounted."""
        if self.mode == "v2":
            return self.unified
        return next((h for h in self.hierarchies if h.version == 1 and controller in h.controllers), None)


def detect_layout(mountinfo: str = "/proc/self/mountinfo", root: str = "/") -> Layout:
    """The layout from the `cgroup` and `cgroup2` mounts in `mountinfo` (mount points prefixed with `root`).

    A hierarchy mounted twice (bind mounts, a container's view) counts once, at its first mount point.
    """
    found: list[Hierarchy] = []
    seen: set[str] = set()
    for line in _lines(mountinfo):
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        mountpoint = os.path.join(root, _unescape(fields[4]).lstrip("/"))
        if tail[0] == "cgroup2":
            hierarchy = Hierarchy(2, mountpoint, _unescape(fields[3]), _controllers_file(mountpoint))
        else:
            options = tail[2].split(",") if len(tail) > 2 else []
            hierarchy = Hierarchy(1, mountpoint, _unescape(fields[3]), frozenset(o for o in options
                                                                                 if o in V1_CONTROLLERS))
            if not hierarchy.controllers:  # a named hierarchy (name=systemd): no controller, no limit
                continue
        if hierarchy.key not in seen:
            seen.add(hierarchy.key)
            found.append(hierarchy)
    has_v1 = any(h.version == 1 for h in found)
    has_v2 = any(h.version == 2 for h in found)
    if not found:
        raise CgroupError(f"no cgroup filesystem is mounted ({mountinfo} lists no cgroup or cgroup2 mount); "
                          "mount one, e.g. `mount -t cgroup2 none /sys/fs/cgroup`")
    return Layout("hybrid" if has_v1 and has_v2 else "v1" if has_v1 else "v2", tuple(found))


def check_path(path: str, where: str = "linux.cgroupsPath") -> str:
    """A cgroupsPath, normalised; ConfigError for what cannot be a cgroupfs path (CG-OCI-003)."""
    if ":" in path and not path.startswith("/"):
        raise ConfigError(where, f"{path!r} looks like the systemd driver's slice:prefix:name; the reference "
                          "runtime is a cgroupfs-driver runtime: give a path like /conformance-x")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ConfigError(where, f"{path!r}: '..' would leave the hierarchy's mount point")
    if not parts:
        raise ConfigError(where, f"{path!r} names the root cgroup, which cannot be limited or removed")
    return ("/" if path.startswith("/") else "") + "/".join(parts)


def default_path(container_id: str) -> str:
    """The cgroupsPath runc's cgroupfs driver uses when config.json has none: the id, relative to its own cgroup."""
    return container_id


def cgroup_dirs(layout: Layout, path: str, own: Mapping[str, str] | None = None) -> dict[str, str]:
    """Controller (v1) or "unified" -> the directory of cgroupsPath `path` in that hierarchy."""
    path = check_path(path)
    mine = own if own is not None or path.startswith("/") else own_cgroups()
    dirs: dict[str, str] = {}
    for hierarchy in layout.hierarchies:
        keys = [UNIFIED] if hierarchy.version == 2 else [c for c in V1_JOINED if c in hierarchy.controllers]
        if not keys:
            continue
        where = _within(hierarchy, path, (mine or {}).get(keys[0], "/"), layout.mode == "v2")
        for key in keys:
            dirs[key] = where
    return dirs


def _within(hierarchy: Hierarchy, path: str, own: str, parent_of_own: bool) -> str:
    if path.startswith("/"):
        return posixpath.join(hierarchy.mountpoint, path.lstrip("/"))
    base = own
    if hierarchy.root not in ("/", "") and (base == hierarchy.root or base.startswith(hierarchy.root + "/")):
        base = base[len(hierarchy.root):] or "/"  # the mount shows a subtree: paths are below its root
    if parent_of_own:
        base = posixpath.dirname(base.rstrip("/")) or "/"
    return posixpath.join(hierarchy.mountpoint, base.lstrip("/"), path)


def _lines(path: str) -> list[str]:
    """A /proc file's lines; a CgroupError naming it when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read().splitlines()
    except OSError as err:
        raise CgroupError(f"cannot read {path}: {err.strerror}") from None


def own_cgroups(path: str = "/proc/self/cgroup") -> dict[str, str]:
    """Controller (or "unified" for the `0::` line) -> the process's cgroup path, from /proc/<pid>/cgroup."""
    found: dict[str, str] = {}
    for line in _lines(path):
        number, _, rest = line.partition(":")
        controllers, _, where = rest.partition(":")
        if number == "0" and not controllers:
            found[UNIFIED] = where
        for controller in controllers.split(","):
            if controller in V1_CONTROLLERS:
                found[controller] = where
    return found


def _controllers_file(mountpoint: str) -> frozenset[str]:
    try:
        with open(os.path.join(mountpoint, "cgroup.controllers"), encoding="ascii") as handle:
            return frozenset(handle.read().split())
    except OSError:
        return frozenset()


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes of space, tab, newline and backslash (proc(5))."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
