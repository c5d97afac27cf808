"""umoci: unpacks OCI image layouts into a runtime bundle (opencontainers/umoci)."""

from __future__ import annotations

from typing import ClassVar

from conformance.drivers.tool import ToolDriver


class UmociDriver(ToolDriver):
    """`umoci unpack` as a layer applier and layout reader."""

    name: ClassVar[str] = "umoci"
    tool: ClassVar[str] = "umoci"
    description: ClassVar[str] = "umoci unpack of an OCI image layout (layers, whiteouts, digests)"
