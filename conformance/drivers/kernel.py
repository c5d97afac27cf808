"""The host's own kernel as the implementation: real overlay mounts, namespaces, cgroups."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from conformance.drivers import Availability

if TYPE_CHECKING:
    from conformance.transport import ProbeClient

#: The faulty variants the probe knows for the kernel (see conformance/probe/host_checks.py).
FAULTS: dict[str, str] = {
    "HOST-OVERLAY-001": "reports /proc/filesystems without overlay (a kernel without CONFIG_OVERLAY_FS)",
    "HOST-OVERLAY-002": "mounts only the first lower dir",
    "HOST-OVERLAY-003": "writes through to the lower file instead of copying it up",
    "HOST-OVERLAY-004": "deletes the lower file instead of leaving a whiteout",
    "HOST-OVERLAY-005": "adds metacopy=on to userxattr, which overlayfs refuses",
    "HOST-NS-MOUNT-001": "skips unshare(CLONE_NEWNS)",
    "HOST-NS-UTS-001": "skips unshare(CLONE_NEWUTS) and the sethostname",
    "HOST-NS-IPC-001": "skips unshare(CLONE_NEWIPC)",
    "HOST-NS-PID-001": "skips unshare(CLONE_NEWPID)",
    "HOST-NS-NET-001": "skips unshare(CLONE_NEWNET)",
    "HOST-NS-USER-001": "skips unshare(CLONE_NEWUSER)",
    "HOST-NS-CGROUP-001": "skips unshare(CLONE_NEWCGROUP)",
    "HOST-NS-TIME-001": "skips unshare(CLONE_NEWTIME)",
    "HOST-USERNS-001": "maps host uid 0 instead of its own uid, which an unprivileged user may not",
    "HOST-PIVOT-001": "pivots but never detaches the old root",
    "HOST-SECCOMP-001": "enters strict seccomp mode instead of installing a filter",
    "HOST-CGROUP-001": "looks for cgroup mounts under /sys/fs/cgroups",
    "HOST-CGROUP-002": "writes the memory limit in KiB instead of bytes",
    "HOST-CGROUP-003": "writes pids.max as 'max' (no limit)",
    "HOST-CGROUP-004": "swaps quota and period",
    "HOST-CGROUP-005": "never writes cpuset.cpus",
    "HOST-CGROUP-006": "writes the PID to the parent cgroup's cgroup.procs",
    "HOST-CGROUP-007": "looks for the unified hierarchy under /sys/fs/cgroups",
}


class KernelDriver:
    """The running kernel, checked through the probe with no userspace tool in between."""

    name: ClassVar[str] = "kernel"
    areas: ClassVar[frozenset[str]] = frozenset({"host", "overlay"})
    description: ClassVar[str] = "the host's kernel: real mounts, namespaces and cgroups"

    def available(self, facts: Mapping[str, Any]) -> Availability:
        """The kernel is always there; root is needed for mounts, namespaces and cgroups."""
        return Availability.yes()

    def version(self, facts: Mapping[str, Any]) -> str | None:
        """The kernel release."""
        kernel = facts.get("kernel") or {}
        return str(kernel.get("release")) if kernel.get("release") else None

    def faults(self) -> Mapping[str, str]:
        """Faulty variants for every HOST clause."""
        return FAULTS

    def clean(self, client: ProbeClient) -> list[str]:
        """The kernel leaves nothing the generic sweep (conformance clean) does not already remove."""
        return []
