"""fuse-overlayfs as an overlay implementation: the same scenarios as the kernel's overlay, in userspace.

Rootless podman and buildah fall back to it where the kernel's overlay cannot be mounted by the user,
so what it does with whiteouts, opaque directories and renames is what those containers see. The probe
runs it (conformance/probe/overlay_checks.py); this driver only says whether it can run on a host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from conformance.drivers import Availability
from conformance.drivers.tool import ToolDriver


class FuseOverlayfsDriver(ToolDriver):
    """The fuse-overlayfs binary, mounted in the foreground by the probe and unmounted after each scenario."""

    name: ClassVar[str] = "fuse-overlayfs"
    tool: ClassVar[str] = "fuse-overlayfs"
    areas: ClassVar[frozenset[str]] = frozenset({"overlay"})
    description: ClassVar[str] = "fuse-overlayfs, the userspace overlay of rootless containers"

    def available(self, facts: Mapping[str, Any]) -> Availability:
        """Available where the kernel offers FUSE and the tool is installed."""
        if not (facts.get("overlay") or {}).get("fuse"):
            return Availability.no("the kernel offers no FUSE here (no fuse in /proc/filesystems, no /dev/fuse)")
        return super().available(facts)
