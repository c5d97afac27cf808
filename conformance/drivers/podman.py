"""podman: pulls an OCI layout into a private containers/storage store, creates and exports containers."""

from __future__ import annotations

from typing import ClassVar

from conformance.drivers.tool import ToolDriver


class PodmanDriver(ToolDriver):
    """podman pull / create / export with a store in the probe's sandbox (the host's images untouched)."""

    name: ClassVar[str] = "podman"
    tool: ClassVar[str] = "podman"
    areas: ClassVar[frozenset[str]] = frozenset({"layers", "namespaces", "cgroups"})
    description: ClassVar[str] = "podman (overlay storage, runc): pull from an OCI layout, create, export; push; build"
