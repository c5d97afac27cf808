"""crun: the C OCI runtime, given the same bundle as runc and the ref runtime."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from conformance.drivers import Availability
from conformance.drivers.tool import ToolDriver


class CrunDriver(ToolDriver):
    """`crun run --bundle` of the probe's bundle; crun refuses hosts whose cgroups are hybrid."""

    name: ClassVar[str] = "crun"
    tool: ClassVar[str] = "crun"
    areas: ClassVar[frozenset[str]] = frozenset({"namespaces", "cgroups"})
    description: ClassVar[str] = "crun, the C OCI runtime: run an OCI bundle"

    def available(self, facts: Mapping[str, Any]) -> Availability:
        """Installed, and the host's cgroups are pure v1 or v2: crun stops at start-up on a hybrid layout."""
        installed = super().available(facts)
        if not installed.ok:
            return installed
        mode = (facts.get("cgroup") or {}).get("mode")
        if mode == "hybrid":
            return Availability.no("crun refuses hybrid cgroup layouts (v1 controllers with cgroup2 at "
                                   "/sys/fs/cgroup/unified): it runs on pure v1 or v2 hosts")
        return Availability.yes()
