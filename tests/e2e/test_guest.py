"""tools/guest.py: a QEMU (TCG) guest that is a pure cgroup v2 host, built once, booted, reached, stopped.

The guest is where the cgroups area runs for real on machines whose own hierarchy is hybrid: this
module runs it there for the reference runtime, runc and crun, and shows the v2-only clauses' teeth. The
image is built once into the cache (some minutes) and every boot takes about 40 s under TCG
(docs/guest.md), so the module boots one guest for all its tests; the last test stops it and looks
for leftovers, the fixture's finalizer stops it whatever happened before.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance import suite_index
from conformance.clauses import load_catalogue
from tests.conftest import needs_root, run_cli
from tools import guest as guest_tool

pytestmark = [needs_root(), pytest.mark.slow]

# Not the default name: a guest a person booted by hand is left alone.
NAME = f"e2e-{os.getpid()}"


@pytest.fixture(scope="module")
def guest() -> Iterator[guest_tool.Guest]:
    """One booted guest for the module; the image is built first unless the cache has it."""
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils"),
                          ("debootstrap", "debootstrap")):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            pytest.fail(f"{tool} is missing: playbooks/site.yml installs {package}")
    guest_tool.build()
    booted = guest_tool.boot(name=NAME)
    try:
        yield booted
    finally:
        guest_tool.stop(NAME)


def _out(guest: guest_tool.Guest, *argv: str) -> str:
    return guest_tool.run(guest, *argv, timeout=120).stdout.strip()


def test_ssh_reaches_the_guest(guest: guest_tool.Guest) -> None:
    """The ssh_config boot() wrote reaches root on the guest."""
    assert _out(guest, "id", "-u") == "0"
    assert _out(guest, "hostname") == "conformance-guest"
    assert guest.ssh_config.read_text().startswith(f"Host {NAME}\n")


def test_cgroup_hierarchy_is_pure_v2(guest: guest_tool.Guest) -> None:
    """/sys/fs/cgroup is the cgroup2 file system itself, not a tmpfs of v1 hierarchies."""
    assert _out(guest, "stat", "-fc", "%T", "/sys/fs/cgroup") == "cgroup2fs"


def test_root_offers_the_controllers(guest: guest_tool.Guest) -> None:
    """The root cgroup has the memory, pids, cpu and cpuset controllers."""
    controllers = set(_out(guest, "cat", "/sys/fs/cgroup/cgroup.controllers").split())
    assert {"memory", "pids", "cpu", "cpuset"} <= controllers, controllers


def test_root_delegates_the_controllers_to_its_children(guest: guest_tool.Guest) -> None:
    """memory, pids and cpu (systemd's accounting) and cpuset (the image's delegate unit) are enabled below the root."""
    enabled = set(_out(guest, "cat", "/sys/fs/cgroup/cgroup.subtree_control").split())
    assert {"memory", "pids", "cpu", "cpuset"} <= enabled, enabled


def test_runtimes_and_python_are_there(guest: guest_tool.Guest) -> None:
    """runc, crun and python3 (for the probe) are installed."""
    found = guest_tool.run(guest, "which", "runc", "crun", "python3", check=False).stdout.split()
    assert [os.path.basename(path) for path in found] == ["runc", "crun", "python3"], found
    assert _out(guest, "python3", "-c", "print(6 * 7)") == "42"


#: Clauses a runtime may miss at SHOULD level, reported as warnings: the older shares conversion (runc
#: 1.1 and crun 1.8 in Debian 12 give weight 20 for 512 shares) and a pids limit of 0 taken as no limit.
KNOWN_WARNINGS = {("CG-CPU-003", "runc"), ("CG-CPU-003", "crun"), ("CG-PID-002", "runc"), ("CG-PID-002", "crun")}
V2_ONLY = sorted(c.id for c in load_catalogue().select(("cgroups",)) if "v2" in c.tags)


def _conformance_run(guest: guest_tool.Guest, reports: Path, *args: str) -> list[dict[str, Any]]:
    run_cli("run", "--hosts", f"ssh://{NAME}", "--ssh-config", str(guest.ssh_config), "--area", "cgroups",
            "--report-dir", str(reports), "--probe-timeout", "600", *args, timeout=1800)
    results: list[dict[str, Any]] = json.loads((reports / "latest" / "results.json").read_text())["results"]
    return results


def test_cgroups_area_passes_in_the_guest(guest: guest_tool.Guest, tmp_path: Path) -> None:
    """The cgroups area on pure v2: ref, runc and crun conform (but for known SHOULD warnings), v2 clauses too."""
    results = _conformance_run(guest, tmp_path, "--impl", "ref", "--impl", "runc", "--impl", "crun")
    assert {r["context"].get("cgroup mode") for r in results} == {"v2"}
    bad = [(r["clause"], r["implementation"], r["verdict"], r["message"][:300]) for r in results
           if r["verdict"] not in ("pass", "skip")
           and not (r["verdict"] == "warn" and (r["clause"], r["implementation"]) in KNOWN_WARNINGS)]
    assert bad == []
    skipped = {(r["clause"], r["implementation"]) for r in results if r["verdict"] == "skip"}
    assert skipped == {("CG-CPU-004", "runc"), ("CG-CPU-004", "crun")}  # --cpus is an engine flag
    leftovers = guest_tool.run(guest, "sh", "-c", "find /sys/fs/cgroup /tmp /var/tmp -maxdepth 1 -name "
                               "'conformance-*'; runc list -q; crun list -q", check=False).stdout.split()
    assert leftovers == []


def test_v2_clauses_have_teeth_in_the_guest(guest: guest_tool.Guest, tmp_path: Path) -> None:
    """The clauses only a v2 host can check catch the reference runtime's faulty variants there."""
    index = suite_index.tests_by_clause()
    keyword = " or ".join(sorted({t.split("::")[1] for cid in V2_ONLY for t in index[cid]}))
    results = _conformance_run(guest, tmp_path, "--impl", "ref", "--faults", "--level", "MAY", "--", "-k", keyword)
    verdicts = {(r["clause"], bool(r["fault"])): r["verdict"] for r in results}
    assert verdicts == {**{(cid, False): "pass" for cid in V2_ONLY}, **{(cid, True): "fail" for cid in V2_ONLY}}


def test_stop_leaves_nothing_behind(guest: guest_tool.Guest) -> None:
    """stop() powers the guest off: its QEMU is gone, so is its run dir with the overlay and ssh socket."""
    assert guest_tool.stop(NAME)
    assert NAME not in {g.name for g in guest_tool.guests()}
    assert not guest.run_dir.exists()
