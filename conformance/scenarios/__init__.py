"""Scenarios and observations: the plain data that crosses from a test to a host and back.

A scenario says what to set up and do; it is JSON-able so it can be shipped to any host. An
observation says what the probe saw; tests read it through the typed views of each area module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One thing for a probe to do: a kind (e.g. host.overlay_merge) and its parameters."""

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_request(self, index: int, implementation: str, fault: str | None) -> JsonDict:
        """The JSON a probe receives for this scenario."""
        return {"id": str(index), "kind": self.kind, "params": dict(self.params),
                "implementation": implementation, "fault": fault}


@dataclass(frozen=True, slots=True)
class Observation:
    """What a probe saw when it ran one scenario."""

    kind: str
    ok: bool
    data: Mapping[str, Any]
    error: Mapping[str, Any] | None
    duration: float
    cleanup_problems: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, raw: JsonDict) -> Observation:
        """Build from the probe's answer; unknown keys are ignored so probes can add detail."""
        return cls(
            kind=str(raw.get("kind")),
            ok=bool(raw.get("ok")),
            data=raw.get("data") or {},
            error=raw.get("error"),
            duration=float(raw.get("duration", 0.0)),
            cleanup_problems=tuple(raw.get("cleanup_problems") or ()),
        )
