"""What the drivers of userspace tools share: a tool on the host's PATH, its version from the facts.

The probe does the work (conformance/probe/appliers.py turns layer scenarios into tool runs); a driver
only says whether its tool is there and which version it is, so a report can explain a change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from conformance.drivers import Availability

if TYPE_CHECKING:
    from conformance.transport import ProbeClient


class ToolDriver:
    """A tool found through the host's facts; no faulty variants (the suite's teeth are in `ref`)."""

    name: ClassVar[str]
    tool: ClassVar[str]
    areas: ClassVar[frozenset[str]] = frozenset({"layers"})
    description: ClassVar[str]

    def _tool(self, facts: Mapping[str, Any]) -> Mapping[str, Any]:
        return (facts.get("tools") or {}).get(self.tool) or {}

    def available(self, facts: Mapping[str, Any]) -> Availability:
        """Available when the facts found the tool on the host."""
        if not self._tool(facts).get("present"):
            return Availability.no(f"{self.tool} is not installed (playbooks/site.yml installs it)")
        return Availability.yes()

    def version(self, facts: Mapping[str, Any]) -> str | None:
        """The version the tool printed."""
        version = self._tool(facts).get("version")
        return str(version) if version else None

    def faults(self) -> Mapping[str, str]:
        """Real tools are checked as they are; faulty variants are the reference's."""
        return {}

    def clean(self, client: ProbeClient) -> list[str]:
        """Tool leftovers live in prefixed scratch dirs or are named conformance-: the sweep finds them."""
        return []
