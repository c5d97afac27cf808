"""CG-OCI-*: linux.resources.unified, cgroup v2 files by name, written verbatim or refused."""

from __future__ import annotations

import pytest

from conformance.scenarios import cgroups as cg
from conformance.suite.cgroups import at, first, knob, observe, ran, refused
from conformance.target import Target


@pytest.mark.clause("CG-OCI-001")
@pytest.mark.requires("cgroup-v2")
def test_unified_entry_is_written(target: Target) -> None:
    """Unified pids.max "7" MUST read back as pids.max 7 (the pids controller enabled for the cgroup)."""
    seen = observe(target, cg.run("at running", resources={"unified": {"pids.max": "7"}},
                                  checkpoints={"running": ["read"]}))
    run = first(seen)
    ran(target, run)
    target.expect("pids.max", 7, knob(target, at(target, run, "running"), "pids.max"))


@pytest.mark.clause("CG-OCI-002")
@pytest.mark.requires("cgroup-v2")
def test_unknown_unified_entry_is_written(target: Target) -> None:
    """Unified memory.oom.group "1", which no runtime field sets, MUST still be written."""
    seen = observe(target, cg.run("at running", resources={"unified": {"memory.oom.group": "1"}},
                                  checkpoints={"running": ["read"]}, raw=("memory.oom.group",)))
    run = first(seen)
    ran(target, run)
    target.expect("memory.oom.group", "1", at(target, run, "running")["raw"].get("memory.oom.group"))


@pytest.mark.clause("CG-OCI-003")
def test_unified_entry_without_its_controller_is_an_error(target: Target) -> None:
    """A unified key for a controller v2 lacks here MUST stop the container before it runs."""
    layout = str((target.facts.get("cgroup") or {}).get("mode"))
    # On v1 and hybrid hosts every controller is on v1: pids is absent from the unified hierarchy. A pure
    # v2 host has them all, so the key names a controller no kernel has.
    key = "conformance.max" if layout == "v2" else "pids.max"
    seen = observe(target, cg.run("echo ran=1", resources={"unified": {key: "7"}}))
    target.note("unified key", key)
    refused(target, first(seen), f"unified {key}")
