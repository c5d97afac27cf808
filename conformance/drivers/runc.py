"""runc: the OCI reference runtime, given the same bundle (config.json + busybox rootfs) as the ref runtime."""

from __future__ import annotations

from typing import ClassVar

from conformance.drivers.tool import ToolDriver


class RuncDriver(ToolDriver):
    """`runc run --bundle` of a bundle the probe writes; `runc delete --force` after."""

    name: ClassVar[str] = "runc"
    tool: ClassVar[str] = "runc"
    areas: ClassVar[frozenset[str]] = frozenset({"namespaces", "cgroups"})
    description: ClassVar[str] = "runc, the OCI reference runtime: run an OCI bundle"
