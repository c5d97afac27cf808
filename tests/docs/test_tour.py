"""docs/tour.md, run: every command of the guided tour prints what the tour shows, and leaves nothing.

This is what makes the tour fail CI the day it stops being true. To see a failure up close, or to take
a deliberate change of output into the tour: `python -m tests.docs.runtour [--update]` (as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.docs.runtour import TOUR, run_tour
from tests.docs.tourdoc import parse_tour

TOOLS = ("busybox", "docker", "podman", "skopeo", "pgrep", "python3")
IMAGE = "conformance-tour:1"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the tour mounts overlays and runs containers: it needs root"
    absent = [t for t in TOOLS if shutil.which(t) is None]
    if absent:
        return f"the tour needs {', '.join(absent)} (bin/bootstrap provisions them)"
    return None


def _leftovers() -> set[str]:
    """What the tour could leave on the host: its directories, mounts, containers' cgroups and scratch, images."""
    found = {f"dir {p}" for p in Path("/dev/shm").glob("conformance-tour-*")}
    found |= {f"scratch {p}" for p in Path("/dev/shm").glob("conformance-run-*")}
    found |= {f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob("**/conformance-run-*")}
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        found |= {f"mount {line.split()[4]}" for line in info if "conformance-tour-" in line.split()[4]}
    for engine in ("docker", "podman"):
        listed = subprocess.run([engine, "images", "-q", IMAGE], capture_output=True, text=True, timeout=60,
                                check=False)
        if listed.stdout.strip():
            found.add(f"{engine} image {IMAGE}")
    return found


@pytest.mark.slow
@pytest.mark.skipif(bool(_missing()), reason=_missing() or "")
def test_every_command_of_the_tour_prints_what_the_tour_shows() -> None:
    """Run docs/tour.md top to bottom in one shell: each command exits 0 with the output shown (normalised)."""
    before = _leftovers()
    doc = parse_tour(TOUR)
    run = run_tour(doc)
    assert run.ok, run.report()
    ran = {id(r.item) for r in run.ran}
    for step in doc.steps:
        commands = [c for c in doc.commands if c.step == step.anchor]
        assert commands, f"step {step.anchor} has no command"
        assert all(id(c) in ran for c in commands), f"not every command of {step.anchor} ran"
    assert _leftovers() - before == set()
