"""skopeo: copies images between transports (oci:, docker-archive:...) without unpacking them."""

from __future__ import annotations

from typing import ClassVar

from conformance.drivers.tool import ToolDriver


class SkopeoDriver(ToolDriver):
    """`skopeo copy` as a reader of layouts and a copier that must keep digests."""

    name: ClassVar[str] = "skopeo"
    tool: ClassVar[str] = "skopeo"
    description: ClassVar[str] = "skopeo copy between oci: layouts and docker-archive: (verification, digests)"
