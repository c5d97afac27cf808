"""Scenarios of the host-readiness area, built by the tests in conformance/suite/host/.

The layer trees are small on purpose: readiness asks whether the primitive works at all; the overlay,
namespaces and cgroups areas check the details.
"""

from __future__ import annotations

from conformance.scenarios import Scenario

#: Two lowers (top first) and an upper; "shared" is in every layer, "top" in the upper and lower1.
MERGE_LAYERS = {
    "lower1": {"from-lower1": "lower1", "shared": "lower1", "top": "lower1"},
    "lower2": {"from-lower2": "lower2", "shared": "lower2"},
    "upper": {"from-upper": "upper", "top": "upper"},
}
#: What the merged view must hold for MERGE_LAYERS: each name with the content of its top-most layer.
MERGE_EXPECTED = {"from-lower1": "lower1", "from-lower2": "lower2", "from-upper": "upper",
                  "shared": "lower1", "top": "upper"}

MEMORY_LIMIT = str(64 * 1024 * 1024)  # a multiple of every page size in use
PIDS_LIMIT = "42"
CPU_QUOTA, CPU_PERIOD = "50000", "100000"

#: The limit each controller's scenario asks for, per cgroup version ("1" or "2").
LIMITS: dict[str, dict[str, dict[str, str]]] = {
    "memory": {"1": {"memory.limit_in_bytes": MEMORY_LIMIT}, "2": {"memory.max": MEMORY_LIMIT}},
    "pids": {"1": {"pids.max": PIDS_LIMIT}, "2": {"pids.max": PIDS_LIMIT}},
    "cpu": {"1": {"cpu.cfs_period_us": CPU_PERIOD, "cpu.cfs_quota_us": CPU_QUOTA},
            "2": {"cpu.max": f"{CPU_QUOTA} {CPU_PERIOD}"}},
}


def filesystems() -> Scenario:
    """Read /proc/filesystems."""
    return Scenario("host.filesystems")


def overlay_merge() -> Scenario:
    """Mount MERGE_LAYERS with lower1 above lower2 and read the merged view."""
    return Scenario("host.overlay_merge", {"layers": MERGE_LAYERS, "lowers": ["lower1", "lower2"]})


def overlay_copy_up(name: str = "file", old: str = "lower content", new: str = "new content") -> Scenario:
    """Overwrite a lower file through the merged view."""
    return Scenario("host.overlay_copy_up", {"name": name, "old": old, "content": new})


def overlay_whiteout(name: str = "gone") -> Scenario:
    """Unlink a lower file through the merged view."""
    return Scenario("host.overlay_whiteout", {"name": name})


def overlay_in_userns(uid: int = 65534) -> Scenario:
    """Mount overlay with userxattr as root of a user namespace owned by uid."""
    return Scenario("host.overlay_userns", {"uid": uid})


def namespace(kind: str, hostname: str = "conformance-uts") -> Scenario:
    """Create one namespace type (mnt, uts, ipc, pid, net, user, cgroup, time) in a child."""
    return Scenario("host.namespace", {"type": kind, "hostname": hostname})


def unprivileged_userns(uid: int = 65534) -> Scenario:
    """Create a user namespace as an unprivileged uid and map it to root."""
    return Scenario("host.userns_unprivileged", {"uid": uid})


def pivot_root() -> Scenario:
    """pivot_root into a fresh tmpfs in a new mount namespace."""
    return Scenario("host.pivot_root")


def seccomp() -> Scenario:
    """Install an allow-all seccomp filter in a child."""
    return Scenario("host.seccomp")


def cgroup_mounts() -> Scenario:
    """List the mounted cgroup hierarchies."""
    return Scenario("host.cgroup_mounts")


def cgroup_limit(controller: str) -> Scenario:
    """Write a controller's limit in a new cgroup and read it back."""
    return Scenario("host.cgroup_limit", {"controller": controller, "values": LIMITS.get(controller, {})})


def cgroup_procs() -> Scenario:
    """Move a live process into a new cgroup."""
    return Scenario("host.cgroup_procs")
