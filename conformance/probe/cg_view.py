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
        v2 = self.version == 2
        memory = self._file("memory.limit", "memory", "memory.max" if v2 else "memory.limit_in_bytes")
        if memory is not None:
            knobs["memory.limit"] = _limit(memory)
        low = self._file("memory.reservation", "memory", "memory.low" if v2 else "memory.soft_limit_in_bytes")
        if low is not None:
            knobs["memory.reservation"] = _limit(low) if low != "0" else 0
        if v2:
            swap = self._file("memory.swap.max", "memory", "memory.swap.max")
            if swap is not None:
                knobs["memory.swap.max"] = _limit(swap)
            high = self._file("memory.high", "memory", "memory.high")
            if high is not None:
                knobs["memory.high"] = _limit(high)
        else:
            memsw = self._file("memory.memsw", "memory", "memory.memsw.limit_in_bytes")
            if memsw is not None:
                knobs["memory.memsw"] = _limit(memsw)
        current = self._file("memory.current", "memory", "memory.current" if v2 else "memory.usage_in_bytes")
        if current is not None:
            knobs["memory.current"] = int(current)
        knobs["memory.events"] = self._memory_events()
        pids = self._file("pids.max", "pids", "pids.max")
        if pids is not None:
            knobs["pids.max"] = _limit(pids)
        pids_current = self._file("pids.current", "pids", "pids.current")
        if pids_current is not None:
            knobs["pids.current"] = int(pids_current)
        knobs["pids.events"] = _keyed(self._file("pids.events", "pids", "pids.events"))
        knobs.update(self._cpu())
        cpus = self._file("cpuset.cpus", "cpuset", "cpuset.cpus")
        if cpus is not None:
            knobs["cpuset.cpus"] = cpus
        effective = self._file("cpuset.cpus.effective", "cpuset",
                               "cpuset.cpus.effective" if v2 else "cpuset.effective_cpus")
        if effective is not None:
            knobs["cpuset.cpus.effective"] = effective
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
            stat = _keyed(self._file("cpu.stat", "cpu", "cpu.stat"))
            knobs["cpu.stat"] = {k: stat[k] for k in ("usage_usec", "nr_periods", "nr_throttled",
                                                       "throttled_usec") if k in stat}
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
        stat = _keyed(self._file("cpu.stat", "cpu", "cpu.stat"))
        cpu_stat: dict[str, int] = {k: stat[k] for k in ("nr_periods", "nr_throttled") if k in stat}
        if "throttled_time" in stat:
            cpu_stat["throttled_usec"] = stat["throttled_time"] // 1000
        usage = self._file("cpu.usage", "cpuacct", "cpuacct.usage")
        if usage is not None:
            cpu_stat["usage_usec"] = int(usage) // 1000
        knobs["cpu.stat"] = cpu_stat
        return knobs

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
