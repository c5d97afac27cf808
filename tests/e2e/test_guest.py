"""tools/guest.py: a QEMU (TCG) guest that is a pure cgroup v2 host, built once, booted, reached, stopped.

The guest is where the cgroups area runs for real on machines whose own hierarchy is hybrid. The
image is built once into the cache (some minutes) and every boot takes about 40 s under TCG
(docs/guest.md), so the module boots one guest for all its tests; the last test stops it and looks
for leftovers, the fixture's finalizer stops it whatever happened before.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import needs_root
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


def test_stop_leaves_nothing_behind(guest: guest_tool.Guest) -> None:
    """stop() powers the guest off: its QEMU is gone, so is its run dir with the overlay and ssh socket."""
    assert guest_tool.stop(NAME)
    assert NAME not in {g.name for g in guest_tool.guests()}
    assert not guest.run_dir.exists()
