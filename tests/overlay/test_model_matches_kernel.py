"""The central property of the overlay area: the reference model predicts what the kernel does.

Hypothesis draws batches of random scenarios (layer stacks and operation sequences); each batch goes
to the kernel in one probe call and to the model in another, so hundreds of scenarios cost a few
seconds. A batch with a disagreement shrinks to a minimal scenario, which is written to
reports/overlay-found/ as YAML (`conformance overlay replay FILE --impl kernel --against ref`); keep
it under tests/overlay/regressions/ once understood, and test_regressions.py replays it every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.overlay_diff import differences, name_for, scenario_yaml
from conformance.scenarios import overlay
from conformance.transport import ProbeClient
from tests.overlay.strategies import scenario

FOUND = Path(__file__).resolve().parents[2] / "reports" / "overlay-found"


def disagreements(client: ProbeClient, batch: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[str]]]:
    """(params, differences) for each scenario of the batch on which model and kernel disagree."""
    scenarios = [overlay.run(p["lowers"], p["ops"], upper=p["upper"], options=p["options"]) for p in batch]
    kernel = client.call(scenarios, "kernel")
    model = client.call(scenarios, "ref")
    found = []
    for params, k, m in zip(batch, kernel, model, strict=True):
        assert k.ok and m.ok, f"the probe crashed: kernel {k.error}, ref {m.error}"
        lines = differences(m.data, k.data, ("ref", "kernel"), params["ops"])
        if lines:
            found.append((params, lines))
    return found


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.function_scoped_fixture])
@given(batch=st.lists(scenario(), min_size=1, max_size=30))
def test_model_matches_kernel(local_probe: ProbeClient, batch: list[dict[str, Any]]) -> None:
    """For every drawn scenario, the model's observation MUST equal the kernel's (times aside)."""
    found = disagreements(local_probe, batch)
    if found:
        params, lines = found[0]
        FOUND.mkdir(parents=True, exist_ok=True)
        path = FOUND / name_for(params)
        path.write_text(scenario_yaml(params, "found by test_model_matches_kernel:\n" + "\n".join(lines)))
        raise AssertionError(f"model and kernel disagree on {len(found)} of {len(batch)} scenarios; the first "
                             f"({path}):\n  " + "\n  ".join(lines))
