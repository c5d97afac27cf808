"""What a test gets: one (host, implementation, faulty variant) to check one clause against.

A test never touches the host itself: it builds scenarios and asks the target's probe, which runs
them on the host, through the implementation's driver, and answers with observations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from conformance.clauses import Clause
from conformance.drivers import Driver
from conformance.expect import expect, expect_that
from conformance.scenarios import Observation, Scenario
from conformance.transport import ProbeClient, ProbeError


@dataclass(frozen=True, slots=True)
class TargetParam:
    """The parametrisation of one test: which host, which implementation, which faulty variant."""

    host: str
    implementation: str
    fault: str | None = None

    @property
    def id(self) -> str:
        """Test id part, e.g. local-kernel or local-kernel+fault: deterministic and unique per test."""
        return f"{self.host}-{self.implementation}" + ("+fault" if self.fault else "")


@dataclass(slots=True)
class Target:
    """A host and an implementation, bound to the clause the test checks."""

    param: TargetParam
    clause: Clause
    driver: Driver
    client: ProbeClient
    facts: Mapping[str, Any]
    context: dict[str, Any] = field(default_factory=dict)

    def probe(self, *scenarios: Scenario, timeout: float | None = None) -> list[Observation]:
        """Run scenarios on the host in one probe call; a crashed scenario is a harness error."""
        observations = self.client.call(scenarios, self.param.implementation, self.param.fault, timeout)
        for scenario, obs in zip(scenarios, observations, strict=True):
            if not obs.ok:
                error = obs.error or {}
                if error.get("not_applicable"):
                    pytest.skip(f"not applicable: {self.param.implementation}: {error['not_applicable']}")
                raise ProbeError(f"{self.param.host}: scenario {scenario.kind} crashed in the probe: "
                                 f"{error.get('error')}\n{error.get('traceback', '')}")
            if obs.cleanup_problems:
                raise ProbeError(f"{self.param.host}: scenario {scenario.kind} could not clean up: "
                                 + "; ".join(obs.cleanup_problems))
        return observations

    def observe(self, scenario: Scenario, timeout: float | None = None) -> Mapping[str, Any]:
        """Run one scenario and return what it saw."""
        return self.probe(scenario, timeout=timeout)[0].data

    def note(self, key: str, value: Any) -> None:
        """Record context that the report shows with the result (e.g. the cgroup mode it came from)."""
        self.context[key] = value

    def expect(self, what: str, expected: Any, actual: Any, hint: str = "") -> None:
        """Fail with this target's clause unless actual equals expected."""
        __tracebackhide__ = True
        expect(self.clause.id, what, expected, actual, hint)

    def expect_that(self, what: str, holds: bool, expected: str, actual: Any, hint: str = "") -> None:
        """Fail with this target's clause unless the condition holds."""
        __tracebackhide__ = True
        expect_that(self.clause.id, what, holds, expected, actual, hint)
