"""LAYER-SAFE-002/003: the hostile layer corpus against every applier, one test per case.

Each case is applied next to a sentinel tree (conformance/probe/hostile_checks.py). Refusing and
containing are both safe; which one an implementation chose is recorded as the note "outcome", so the
report shows who does what. Cases whose point is a knob only the reference has (a limit, the devices
policy) are skipped for the tools by the probe, with that reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from conformance.scenarios import hostile
from conformance.scenarios.hostile import HostileCase
from conformance.target import Target

TIMEOUT = 300.0  # docker and podman load, create and export an image per case


def _observe(target: Target, case: HostileCase) -> Mapping[str, Any]:
    seen = target.observe(case.scenario(), timeout=TIMEOUT)
    outcome = seen["outcome"]
    if outcome == "refused":
        note = f"refused: {seen['error']}"
    elif outcome == "contained" and seen.get("path_inside") is False:
        note = f"contained ({case.path} is not in the rootfs: the entry was dropped)"
    else:
        note = str(outcome)
    target.note("outcome", note)
    return seen


@pytest.mark.clause("LAYER-SAFE-002")
@pytest.mark.parametrize("case", hostile.cases(hostile.SAFE), ids=lambda case: case.id)
def test_hostile_layer_is_refused_or_contained(target: Target, case: HostileCase) -> None:
    """A hostile layer MUST fail with an error or stay inside the rootfs.

    The sentinel beside it keeps its content, mode, owner, times, xattrs and link count, nothing new
    appears outside, and no inode in the rootfs is the sentinel's.
    """
    seen = _observe(target, case)
    target.expect(f"{case.hazard} {case.id}: sentinel beside the rootfs changed", [], seen["sentinel_diff"],
                  hint=f"outcome {seen['outcome']}; apply said: {seen['error'] or 'no error'}")
    target.expect(f"{case.hazard} {case.id}: changes outside the rootfs", [], seen["escaped"],
                  hint=f"outcome {seen['outcome']}; apply said: {seen['error'] or 'no error'}")


@pytest.mark.clause("LAYER-SAFE-003")
@pytest.mark.parametrize("case", hostile.cases(hostile.WHOLE), ids=lambda case: case.id)
def test_layer_that_cannot_be_read_whole_is_refused(target: Target, case: HostileCase) -> None:
    """A truncated or corrupt tar or gzip stream, or one past the applier's limits, MUST be refused.

    An error, not a rootfs made of the part that could be read.
    """
    seen = _observe(target, case)
    target.expect(f"{case.hazard} {case.id}: outcome", "refused", seen["outcome"],
                  hint=f"the rootfs it left holds {seen['rootfs_names'] or 'nothing'}")
