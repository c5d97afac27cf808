"""A container's cgroup as the host sees it: where it is, and what its files say, in one vocabulary.

The same limit lives in a different file under cgroup v1 and v2 (memory.max or memory.limit_in_bytes,
cpu.max or cpu.cfs_quota_us and cpu.cfs_period_us, cgroup.freeze or freezer.state...). The tests compare
values, not file names, so this module reads each knob from whichever file the host's layout has and
says which file that was (`files`), so a report can show the exact source of a number.

Values: a limit is an int, or None for "no limit" (v2 "max", v1 the page counter's maximum); counters
are ints; a file the layout lacks is absent from the result rather than guessed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

from conformance.probe import cgroupfs

JsonDict = dict[str, Any]

#: v1 reads "no limit" as the page counter's maximum rounded to pages: anything this big is unlimited.
_V1_UNLIMITED = 1 << 62
#: The controllers whose v1 hierarchy a container's cgroup is looked up in (v2 has one for all).
CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "cpuset", "freezer")


def container_paths(pid: int, found: list[cgroupfs.Hierarchy]) -> dict[str, str]:
    """Controller (or "unified") -> absolute dir of pid's cgroup on the host."""
    mounts = {key: h.mountpoint for h in found for key in (("unified",) if h.version == 2 else ()) + h.controllers}
    return {key: os.path.join(mounts[key], rel.lstrip("/")) for key, rel in relative_paths(pid, found).items()}


def relative_paths(pid: int, found: list[cgroupfs.Hierarchy]) -> dict[str, str]:
    """Controller (or "unified") -> pid's cgroup path relative to its hierarchy (as cgroupsPath names it)."""
    rels: dict[str, str] = {}
    for h in found:
        rel = cgroupfs.cgroup_of(pid, h)
        if rel is None:
            continue
        if h.version == 2:
            rels["unified"] = rel
        for controller in h.controllers:
            if controller in CONTROLLERS:
                rels.setdefault(controller, rel)
    return rels


def _raw(path: str) -> str | None:
    try:
        return cgroupfs.read(path)
    except OSError:
        return None


def _limit(text: str | None) -> int | None:
    if text is None or text == "max":
        return None
    value = int(text)
    return None if value >= _V1_UNLIMITED or value < 0 else value


def _keyed(text: str | None) -> dict[str, int]:
    """A flat-keyed file ("key value" lines) as a dict."""
    found: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            found[key] = int(value)
    return found


def _reservation(text: str) -> int | None:
    return _limit(text) if text != "0" else 0


#: Knobs read from one file each: (knob, v1 controller, v2 file, v1 file, parser); None where a
#: version has no such file (memory.high and swap.max are v2's, memsw is v1's).
_PLAIN_KNOBS: tuple[tuple[str, str, str | None, str | None, Callable[[str], Any]], ...] = (
    ("memory.limit", "memory", "memory.max", "memory.limit_in_bytes", _limit),
    ("memory.reservation", "memory", "memory.low", "memory.soft_limit_in_bytes", _reservation),
    ("memory.swap.max", "memory", "memory.swap.max", None, _limit),
    ("memory.high", "memory", "memory.high", None, _limit),
    ("memory.memsw", "memory", None, "memory.memsw.limit_in_bytes", _limit),
    ("memory.current", "memory", "memory.current", "memory.usage_in_bytes", int),
    ("pids.max", "pids", "pids.max", "pids.max", _limit),
    ("pids.current", "pids", "pids.current", "pids.current", int),
    ("cpuset.cpus", "cpuset", "cpuset.cpus", "cpuset.cpus", str),
    ("cpuset.cpus.effective", "cpuset", "cpuset.cpus.effective", "cpuset.effective_cpus", str),
)


class Reader:
    """Reads knobs of one container cgroup; `files` records which file each knob came from."""

    def __init__(self, paths: dict[str, str], version: int) -> None:
        self.paths = paths
        self.version = version
        self.files: dict[str, str] = {}

    def _file(self, knob: str, controller: str, name: str) -> str | None:
        base = self.paths.get("unified" if self.version == 2 else controller)
        if base is None:
            return None
        path = os.path.join(base, name)
        text = _raw(path)
        if text is not None:
            self.files[knob] = path
        return text

    def read_all(self) -> JsonDict:
        """Every knob this layout has, as plain JSON."""
        knobs: JsonDict = {}
        for knob, controller, v2_name, v1_name, parse in _PLAIN_KNOBS:
            name = v2_name if self.version == 2 else v1_name
            text = self._file(knob, controller, name) if name else None
            if text is not None:
                knobs[knob] = parse(text)
        knobs["memory.events"] = self._memory_events()
        knobs["pids.events"] = _keyed(self._file("pids.events", "pids", "pids.events"))
        knobs.update(self._cpu())
        frozen = self.frozen()
        if frozen is not None:
            knobs["frozen"] = frozen
        return knobs

    def _memory_events(self) -> dict[str, int]:
        if self.version == 2:
            return _keyed(self._file("memory.events", "memory", "memory.events"))
        events = {}
        control = _keyed(self._file("memory.events", "memory", "memory.oom_control"))
        if "oom_kill" in control:
            events["oom_kill"] = control["oom_kill"]
        failcnt = self._file("memory.failcnt", "memory", "memory.failcnt")
        if failcnt is not None:
            events["max"] = int(failcnt)  # times usage hit the limit: v2's "max" event
        return events

    def _cpu(self) -> JsonDict:
        knobs: JsonDict = {}
        if self.version == 2:
            text = self._file("cpu.max", "cpu", "cpu.max")
            if text is not None:
                quota, _, period = text.partition(" ")
                knobs["cpu.quota"] = None if quota == "max" else int(quota)
                knobs["cpu.period"] = int(period)
            weight = self._file("cpu.weight", "cpu", "cpu.weight")
            if weight is not None:
                knobs["cpu.weight"] = int(weight)
            knobs["cpu.stat"] = self.cpu_stat()
            return knobs
        cfs_quota = self._file("cpu.quota", "cpu", "cpu.cfs_quota_us")
        cfs_period = self._file("cpu.period", "cpu", "cpu.cfs_period_us")
        if cfs_quota is not None:
            knobs["cpu.quota"] = None if int(cfs_quota) < 0 else int(cfs_quota)
        if cfs_period is not None:
            knobs["cpu.period"] = int(cfs_period)
        shares = self._file("cpu.shares", "cpu", "cpu.shares")
        if shares is not None:
            knobs["cpu.shares"] = int(shares)
        knobs["cpu.stat"] = self.cpu_stat()
        return knobs

    def cpu_stat(self) -> dict[str, int]:
        """usage_usec, nr_periods, nr_throttled and throttled_usec in v2's names and units, on v1 too."""
        stat = _keyed(self._file("cpu.stat", "cpu", "cpu.stat"))
        if self.version == 2:
            return {k: stat[k] for k in ("usage_usec", "nr_periods", "nr_throttled", "throttled_usec") if k in stat}
        cpu_stat: dict[str, int] = {k: stat[k] for k in ("nr_periods", "nr_throttled") if k in stat}
        if "throttled_time" in stat:
            cpu_stat["throttled_usec"] = stat["throttled_time"] // 1000
        usage = self._file("cpu.usage", "cpuacct", "cpuacct.usage")
        if usage is not None:
            cpu_stat["usage_usec"] = int(usage) // 1000
        return cpu_stat

    def frozen(self) -> bool | None:
        """Whether the freezer reports the cgroup frozen (None: no freezer here)."""
        if self.version == 2:
            events = _keyed(self._file("frozen", "freezer", "cgroup.events"))
            return bool(events["frozen"]) if "frozen" in events else None
        state = self._file("frozen", "freezer", "freezer.state")
        return None if state is None else state == "FROZEN"

    def raw(self, name: str) -> str | None:
        """A v2 file by its own name (resources.unified keys), as the kernel prints it."""
        return self._file(name, name.split(".", 1)[0], name)

    def procs(self) -> list[int]:
        """PIDs in the cgroup (pids controller's view on v1, the unified one on v2)."""
        base = self.paths.get("unified" if self.version == 2 else "pids") or self.paths.get("memory")
        if base is None:
            return []
        text = _raw(os.path.join(base, "cgroup.procs")) or ""
        return [int(p) for p in text.split()]


def cputime_usec(pids: list[int]) -> int:
    """Utime + stime of live processes from /proc/PID/stat, in microseconds (clock-tick resolution)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
    return total * 1_000_000 // ticks


def waited_usec(pids: list[int]) -> dict[int, int]:
    """Per live process, the time it has spent runnable but waiting for a CPU (schedstat run_delay), in µs.

    Time a process sits in a throttled cgroup counts as waiting too, so waiting beyond the cgroup's
    throttled time is what other load took from it. Empty where the kernel keeps no schedstat.
    """
    found: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError), \
                open(f"/proc/{pid}/schedstat", encoding="utf-8") as handle:
            found[pid] = int(handle.read().split()[1]) // 1000
    return found
