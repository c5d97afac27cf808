"""From a pytest report to a verdict: the one place that decides pass, fail, warn, error and the rest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from conformance.expect import NonConformance
from conformance.hosts import HostUnreachable
from conformance.transport import ProbeTimeout
from conformance.verdicts import Level, Verdict


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict with the words and values a report shows for it."""

    verdict: Verdict
    message: str = ""
    expected: str | None = None
    actual: str | None = None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def decide(report: pytest.TestReport, excinfo: pytest.ExceptionInfo[BaseException] | None,
           level: Level, threshold: Level) -> Decision:
    """The verdict of one phase of one test, given the clause's level and the selected level."""
    if report.passed:
        return Decision(Verdict.PASS)
    if report.skipped:
        if hasattr(report, "wasxfail"):
            return Decision(Verdict.XFAIL, f"known deviation: {report.wasxfail}")
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        return Decision(Verdict.SKIP, reason.removeprefix("Skipped: "))
    if excinfo is None:  # failed without an exception: a strict xfail that passed
        return Decision(Verdict.FAIL, "a recorded known deviation no longer deviates: remove it from "
                        f"deviations.yaml ({report.longrepr})")
    exc = excinfo.value
    if isinstance(exc, HostUnreachable):
        return Decision(Verdict.UNREACHABLE, str(exc))
    if isinstance(exc, ProbeTimeout):
        return Decision(Verdict.TIMEOUT, str(exc))
    if isinstance(exc, pytest.fail.Exception):
        if str(exc).startswith("Timeout"):  # pytest-timeout stopped the test
            return Decision(Verdict.TIMEOUT, str(exc))
        # pytest.fail() is deliberate wherever it is raised (an expired deviation fails in setup)
        return Decision(Verdict.FAIL, str(exc))
    if isinstance(exc, AssertionError) and report.when == "call":
        # Only a check of the clause in the test body is a non-conformance; below --level it warns.
        verdict = Verdict.FAIL if level.within(threshold) else Verdict.WARN
        if isinstance(exc, NonConformance):
            return Decision(verdict, str(exc), _text(exc.expected), _text(exc.actual))
        return Decision(verdict, str(exc).strip() or excinfo.exconly())
    return Decision(Verdict.ERROR, f"{excinfo.exconly()[:2000]}")
