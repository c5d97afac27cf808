"""Tests of the cgroups area: limits written where the kernel reads them, and enforced on the container.

Every test runs one "cg.run" scenario (conformance/scenarios/cgroups.py): a busybox workload in a
container of the runtime under test, stopping at checkpoints where the probe reads the container's
cgroup from the host. The helpers here read that one observation shape and record the host's cgroup
layout with the result, since the same clause is checked through different files on v1 and v2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conformance.scenarios import Scenario
from conformance.scenarios.cgroups import said
from conformance.target import Target

MIB = 1 << 20

JsonDict = dict[str, Any]


def observe(target: Target, scenario: Scenario, timeout: float | None = None) -> Mapping[str, Any]:
    """Run the scenario; note the cgroup layout it ran on, which the report shows with the verdict."""
    seen: Mapping[str, Any] = target.observe(scenario, timeout=timeout)
    target.note("cgroup mode", seen.get("mode"))
    return seen


def first(seen: Mapping[str, Any]) -> Mapping[str, Any]:
    """The first (usually only) run of the scenario."""
    run: Mapping[str, Any] = seen["runs"][0]
    return run


def ran(target: Target, run: Mapping[str, Any]) -> dict[str, str]:
    """Fail unless the container ran its script to the end; its key=value output."""
    __tracebackhide__ = True
    target.expect("container exit status", 0, run.get("exit"), hint=str(run.get("stderr") or "")[-300:])
    return said(run)


def at(target: Target, run: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """What the host read at checkpoint `name`; fails when the script never got there."""
    __tracebackhide__ = True
    point: Mapping[str, Any] | None = run.get("at", {}).get(name)
    target.expect_that(f"checkpoint {name!r} reached", bool(point and point.get("init_pid")), "reached",
                       f"exit {run.get('exit')}", hint=str(run.get("stderr") or "")[-300:])
    assert point is not None
    return point


def own(target: Target, point: Mapping[str, Any]) -> Mapping[str, Any]:
    """The checkpoint's knobs, once the cgroup read is shown to be the container's own, not the runtime's."""
    __tracebackhide__ = True
    target.expect_that("the container's cgroup differs from the runtime's (the probe's)",
                       point.get("cgroup") != point.get("probe_cgroup"), "a cgroup of its own",
                       point.get("cgroup"))
    return knobs(point)


def knobs(point: Mapping[str, Any]) -> Mapping[str, Any]:
    """Knob name -> value, as conformance/probe/cg_view.py normalises them."""
    values: Mapping[str, Any] = point.get("knobs") or {}
    return values


def knob(target: Target, point: Mapping[str, Any], name: str) -> Any:
    """One knob's value; fails (naming the file) when the container's cgroup lacks it."""
    __tracebackhide__ = True
    values = knobs(point)
    target.expect_that(f"{name} in the container's cgroup", name in values, "present",
                       sorted(values), hint="a v2 runtime must enable the controller down the path")
    return values[name]


def refused(target: Target, run: Mapping[str, Any], what: str) -> None:
    """Fail unless the runtime refused to run the container: an error status and the script never began."""
    __tracebackhide__ = True
    target.expect_that(f"{what}: the runtime's exit status", run.get("exit") not in (0, None), "non-zero (an error)",
                       run.get("exit"))
    target.expect(f"{what}: the container's script began", False, run.get("started"),
                  hint=str(run.get("stdout") or "")[-200:])


def values_close(a: float, b: float, err: float) -> bool:
    """The kernel selftests' tolerance (cgroup_util.h): |a - b| is at most err percent of a + b."""
    return abs(a - b) <= (a + b) / 100 * err


def mode(seen: Mapping[str, Any]) -> str:
    """v1, hybrid or v2: hybrid hosts have their controllers on v1, so read like v1."""
    return str(seen.get("mode"))
