"""CG-FRZ-*: pausing a container through its runtime freezes its cgroup, resuming thaws it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from conformance.scenarios import cgroups as cg
from conformance.suite.cgroups import at, first, observe, ran
from conformance.target import Target


def _paused(target: Target) -> Mapping[str, Any]:
    """A counting container paused and resumed at its checkpoint; what the host saw meanwhile."""
    seen = observe(target, cg.run(f"{cg.COUNTER}at counting; kill %1 2>/dev/null; exit 0",
                                  resources={"pids": {"limit": 64}}, checkpoints={"counting": ["freeze"]}))
    run = first(seen)
    ran(target, run)
    freeze: Mapping[str, Any] = at(target, run, "counting")["freeze"]
    return freeze


@pytest.mark.clause("CG-FRZ-001")
def test_pause_stops_progress_and_resume_restores_it(target: Target) -> None:
    """The counter MUST stand still for half a second while paused, and move again after resume."""
    freeze = _paused(target)
    target.expect("the counter moved while paused", False, freeze["progress_while_paused"])
    target.expect("the counter moved after resume", True, freeze["progress_after_resume"])


@pytest.mark.clause("CG-FRZ-002")
def test_freezer_reports_frozen_then_thawed(target: Target) -> None:
    """While paused the freezer MUST say frozen (cgroup.events frozen 1 / FROZEN); after resume, thawed."""
    freeze = _paused(target)
    target.expect("frozen reported while paused", True, freeze["frozen_reported"])
    target.expect("thawed reported after resume", True, freeze["thaw_reported"])
