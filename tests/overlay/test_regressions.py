"""Scenarios the property test once found (tests/overlay/regressions/*.yaml): model and kernel agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.overlay_diff import differences, load_scenario
from conformance.transport import ProbeClient

CASES = sorted((Path(__file__).parent / "regressions").glob("*.yaml"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_regression_scenario_agrees(local_probe: ProbeClient, path: Path) -> None:
    scenario = load_scenario(path)
    [kernel] = local_probe.call([scenario], "kernel")
    [model] = local_probe.call([scenario], "ref")
    assert kernel.ok and model.ok, f"the probe crashed: kernel {kernel.error}, ref {model.error}"
    assert differences(model.data, kernel.data, ("ref", "kernel"), scenario.params.get("ops", ())) == []
