"""docker: the Docker engine, reached through the socket the provisioning playbook starts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from conformance.drivers import Availability
from conformance.drivers.tool import ToolDriver


class DockerDriver(ToolDriver):
    """docker load / create / export of images; needs a daemon that answers, not only the client."""

    name: ClassVar[str] = "docker"
    tool: ClassVar[str] = "docker"
    areas: ClassVar[frozenset[str]] = frozenset({"layers", "namespaces", "cgroups"})
    description: ClassVar[str] = "the Docker engine (overlay2): load, create, read its overlay; save; build"

    def available(self, facts: Mapping[str, Any]) -> Availability:
        """The client and a daemon answering on a known socket (facts: docker_server)."""
        client = super().available(facts)
        if not client.ok:
            return client
        server = facts.get("docker_server") or {}
        if not server.get("version"):
            return Availability.no(f"no docker daemon answers: {server.get('error', 'not probed')}")
        return Availability.yes()

    def version(self, facts: Mapping[str, Any]) -> str | None:
        """The daemon's version: it, not the client, unpacks layers."""
        server = facts.get("docker_server") or {}
        return str(server["version"]) if server.get("version") else super().version(facts)
