"""Finding the cgroup hierarchies a host mounts, and the files a controller's limit lives in.

A host is v2 (one unified hierarchy at /sys/fs/cgroup), v1 (one hierarchy per controller) or hybrid
(v1 controllers plus an unified hierarchy, usually at /sys/fs/cgroup/unified). The same limit has a
different file in each version; this module is the one place that knows both.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from typing import NamedTuple

from conformance.probe.sandbox import Sandbox

CGROUP_ROOT = "/sys/fs/cgroup"


class Hierarchy(NamedTuple):
    """One mounted cgroup hierarchy."""

    version: int
    mountpoint: str
    controllers: tuple[str, ...]


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def hierarchies(mountinfo: str = "/proc/self/mountinfo", root: str = CGROUP_ROOT) -> list[Hierarchy]:
    """Every cgroup hierarchy mounted below root, with the controllers it offers."""
    found: list[Hierarchy] = []
    with open(mountinfo, encoding="utf-8") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            fields = left.split()
            fstype, _source, *rest = right.split()
            mountpoint = _unescape(fields[4])
            if not (mountpoint == root or mountpoint.startswith(root + "/")):
                continue
            if fstype == "cgroup2":
                try:
                    with open(os.path.join(mountpoint, "cgroup.controllers"), encoding="utf-8") as ctl:
                        controllers = tuple(ctl.read().split())
                except OSError:
                    controllers = ()
                found.append(Hierarchy(2, mountpoint, controllers))
            elif fstype == "cgroup":
                options = rest[0].split(",") if rest else []
                known = {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "blkio",
                         "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc"}
                found.append(Hierarchy(1, mountpoint, tuple(o for o in options if o in known)))
    return found


def mode(found: list[Hierarchy], root: str = CGROUP_ROOT) -> str:
    """v2, v1, hybrid or none, as the kernel docs and systemd name the layouts."""
    has_v1 = any(h.version == 1 and h.controllers for h in found)
    unified = [h for h in found if h.version == 2]
    if unified and any(h.mountpoint == root for h in unified) and not has_v1:
        return "v2"
    if has_v1 and unified:
        return "hybrid"
    if has_v1:
        return "v1"
    return "v2" if unified else "none"


def hierarchy_for(controller: str, found: list[Hierarchy]) -> Hierarchy | None:
    """The hierarchy that offers a controller: v2 where v2 has it, else the v1 one."""
    for version in (2, 1):
        for h in found:
            if h.version == version and controller in h.controllers:
                return h
    return None


# The files each readiness limit is written to, per version; see cgroup-v2.rst and cgroup-v1/*.rst.
LIMIT_FILES: dict[tuple[str, int], tuple[str, ...]] = {
    ("memory", 2): ("memory.max",),
    ("memory", 1): ("memory.limit_in_bytes",),
    ("pids", 2): ("pids.max",),
    ("pids", 1): ("pids.max",),
    ("cpu", 2): ("cpu.max",),
    ("cpu", 1): ("cpu.cfs_period_us", "cpu.cfs_quota_us"),
    ("cpuset", 2): ("cpuset.cpus",),
    ("cpuset", 1): ("cpuset.cpus",),
}


def read(path: str) -> str:
    """A cgroup file's content without the trailing newline."""
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


def write(path: str, value: str) -> None:
    """Write one value; cgroup files want a single write(2) call."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def enable_controller(h: Hierarchy, controller: str, sandbox: Sandbox) -> None:
    """On v2, enable the controller for the root's children, and undo it after if we changed it."""
    if h.version != 2:
        return
    control = os.path.join(h.mountpoint, "cgroup.subtree_control")
    if controller in read(control).split():
        return
    write(control, f"+{controller}")
    sandbox.defer(f"-{controller} in {control}", lambda: _quietly(lambda: write(control, f"-{controller}")))


def _quietly(step: object) -> None:
    with contextlib.suppress(OSError):
        step()  # type: ignore[operator]


def make_cgroup(h: Hierarchy, name: str, sandbox: Sandbox) -> str:
    """Create a cgroup named with the run's prefix and remove it (killing members) when done."""
    path = os.path.join(h.mountpoint, name)
    os.mkdir(path)
    sandbox.defer(f"rmdir {path}", lambda: remove_cgroup(path))
    return path


def remove_cgroup(path: str, attempts: int = 50) -> None:
    """Kill what is left in a cgroup and its children and remove them all, deepest first.

    rmdir fails with EBUSY while members exit; a frozen cgroup's members cannot die until it is thawed
    (a run killed mid-pause leaves one), so thaw first.
    """
    with contextlib.suppress(OSError):
        for child in sorted(os.listdir(path)):
            if os.path.isdir(os.path.join(path, child)):
                remove_cgroup(os.path.join(path, child), attempts)
    for name, value in (("cgroup.freeze", "0"), ("freezer.state", "THAWED")):
        with contextlib.suppress(OSError):
            write(os.path.join(path, name), value)
    for _ in range(attempts):
        with contextlib.suppress(OSError):
            write(os.path.join(path, "cgroup.kill"), "1")
        with contextlib.suppress(OSError):
            for pid in read(os.path.join(path, "cgroup.procs")).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.02)
    os.rmdir(path)


def cgroup_of(pid: int, h: Hierarchy) -> str | None:
    """The path of pid's cgroup in hierarchy h, from /proc/PID/cgroup."""
    with open(f"/proc/{pid}/cgroup", encoding="utf-8") as handle:
        for line in handle:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            names = controllers.split(",") if controllers else []
            if (h.version == 2 and _id == "0") or (h.version == 1 and set(names) & set(h.controllers)):
                return path
    return None
