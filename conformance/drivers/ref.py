"""The project's reference implementations (conformance/ref), run by the probe on the host.

The area issues fill in ref/ (layers, overlay model, runtime, cgroup manager) and add their areas and
faulty variants here; until then it offers no area and so runs no test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from conformance.drivers import Availability

if TYPE_CHECKING:
    from conformance.transport import ProbeClient


class RefDriver:
    """The readable Python reference implementations, the oracle of differential tests."""

    name: ClassVar[str] = "ref"
    areas: ClassVar[frozenset[str]] = frozenset()
    description: ClassVar[str] = "the project's reference implementations in Python (conformance/ref)"

    def available(self, facts: Mapping[str, Any]) -> Availability:
        """The reference implementations need only the host's python3, which the probe already needs."""
        return Availability.yes()

    def version(self, facts: Mapping[str, Any]) -> str | None:
        """The suite's own version: the reference implementations ship with it."""
        from conformance import __version__  # noqa: PLC0415

        return __version__

    def faults(self) -> Mapping[str, str]:
        """No faulty variants until the areas arrive."""
        return {}

    def clean(self, client: ProbeClient) -> list[str]:
        """The reference implementations leave only what the generic sweep removes."""
        return []
