"""Scenarios for the project's own tests of the harness: hold resources, then wait.

They let a test stop a probe mid-scenario (timeout, SIGKILL) and check that the probe's cleanup or
`conformance clean` leaves the host as it was.
"""

from __future__ import annotations

import os
import time
from typing import Any

from conformance import PREFIX
from conformance.probe import cgroupfs
from conformance.probe.actions import Context, action

JsonDict = dict[str, Any]


@action("selftest.hold")
def hold(params: JsonDict, ctx: Context) -> JsonDict:
    """Mount a tmpfs and create a cgroup (both prefixed), print where, then sleep."""
    held = ctx.sandbox.path("held")
    os.mkdir(held)
    ctx.sandbox.mount(f"{PREFIX}{ctx.sandbox.run_id}-held", held, "tmpfs")
    made: JsonDict = {"sandbox": ctx.sandbox.root, "mount": held, "cgroup": None}
    h = cgroupfs.hierarchy_for("pids", cgroupfs.hierarchies())
    if h is not None:
        made["cgroup"] = cgroupfs.make_cgroup(h, f"{PREFIX}{ctx.sandbox.run_id}-held", ctx.sandbox)
    with open(os.path.join(ctx.sandbox.root, "ready"), "w", encoding="utf-8") as handle:
        handle.write(str(os.getpid()))
    time.sleep(float(params.get("seconds", 60)))
    return made
