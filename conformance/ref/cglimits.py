"""OCI linux.resources (memory, pids, cpu, unified) as frozen data, and the cgroup file writes each one means.

runtime-spec config-linux.md describes the limits in cgroup v1 terms; a v2 host keeps the same knobs
in other files and sometimes other units. What each field becomes (ns_cgroups research § 2.15; runc's
libcontainer/cgroups fs and fs2, crun's libcrun/cgroup-resources.c):

| field | cgroup v1 | cgroup v2 |
|---|---|---|
| memory.limit L | memory.limit_in_bytes = L (-1 unlimited) | memory.max = L ("max") |
| memory.reservation R | memory.soft_limit_in_bytes = R | memory.low = R |
| memory.swap S (memory + swap) | memory.memsw.limit_in_bytes = S | memory.swap.max = S - L ("max" for -1) |
| pids.limit N | pids.max = N ("max" for -1; 0 stays 0, the spec's SHOULD) | the same |
| cpu.shares S | cpu.shares = S | cpu.weight = shares_to_weight(S) |
| cpu.quota Q, cpu.period P | cpu.cfs_period_us = P, cpu.cfs_quota_us = Q | cpu.max = "Q P" ("max P" for -1) |
| cpu.cpus, cpu.mems | cpuset.cpus, cpuset.mems | the same |
| unified {file: value} | an error: "unified resources need cgroup v2" | each file written as given, last |

Zero means "not set" for the memory, shares, quota and period fields, as in runc. A quota without a
period gets the kernel's default period, 100000 µs; a period must lie in [1000, 1000000] µs (the
kernel's own bounds, kernel/sched/core.c: max_cfs_quota_period 1 s, min_cfs_quota_period 1 ms;
moby's "can not be less than 1ms ... or larger than 1s"). On v1 memory.memsw.limit_in_bytes may never
be below memory.limit_in_bytes, so the order of the two writes depends on the limit already there
(runc's setMemoryAndSwap): `plan` takes it. unified keys come after the rest, so they win where both
set one knob (runc "cgroup v2 resources.unified override").

`plan(resources, version, faults)` is pure: the writes, in order, or a ConfigError naming the field.
The fault names are the reference runtime's (runtime.FAULTS); each one is one `# FAULT` branch here.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conformance.ref.specread import ConfigError, integer, obj, opt_string, string

DEFAULT_PERIOD = 100000  # µs: the kernel's default CFS period
PERIOD_RANGE = (1000, 1000000)  # µs: what the kernel takes for cpu.cfs_period_us and cpu.max
_CPU_LIST = re.compile(r"^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$")
_UNIFIED_KEY = re.compile(r"^[a-z_]+\.[A-Za-z0-9_.]+$")
_WHERE = "linux.resources"


@dataclass(frozen=True, slots=True)
class Resources:
    """The linux.resources fields this runtime applies; None is "not set" (0 for the fields where 0 means it)."""

    memory_limit: int | None = None
    memory_reservation: int | None = None
    memory_swap: int | None = None
    pids_limit: int | None = None
    cpu_shares: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    cpu_cpus: str | None = None
    cpu_mems: str | None = None
    unified: tuple[tuple[str, str], ...] = ()

    @property
    def any_set(self) -> bool:
        """Whether anything here asks for a cgroup (the device list and the other ignored fields do not)."""
        return self != NO_LIMITS


NO_LIMITS = Resources()


@dataclass(frozen=True, slots=True)
class Write:
    """One value for one cgroup file: `controller` picks the hierarchy (v1) or what must be enabled (v2).

    `field` names what the config said, for error messages; an `optional` write is skipped when the
    file does not exist (memory.swap.max on a host without swap, when the value means "no swap" or "max").
    """

    controller: str
    file: str
    value: str
    field: str
    optional: bool = False


def parse_resources(doc: Mapping[str, Any]) -> Resources:
    """linux.resources, each field checked; fields other than memory, pids, cpu and unified are not read."""
    memory = obj(doc.get("memory", {}), f"{_WHERE}.memory")
    cpu = obj(doc.get("cpu", {}), f"{_WHERE}.cpu")

    def amount(group: Mapping[str, Any], name: str, where: str, minimum: int = -1) -> int | None:
        value = group.get(name)
        if value is None:
            return None
        number = integer(value, f"{_WHERE}.{where}.{name}", minimum=minimum)
        return None if number == 0 else number

    limit = amount(memory, "limit", "memory")
    swap = amount(memory, "swap", "memory")
    if swap is not None and swap > 0:
        if limit is None or limit < 0:
            raise ConfigError(f"{_WHERE}.memory.swap", "a memory+swap limit needs memory.limit too (runc: \"unable "
                              "to set swap limit without memory limit\")")
        if swap < limit:
            raise ConfigError(f"{_WHERE}.memory.swap", f"{swap} is below memory.limit {limit}: swap is the "
                              "memory+swap total, so it must be at least the memory limit")
    pids_limit = None
    if doc.get("pids") is not None:
        pids = obj(doc["pids"], f"{_WHERE}.pids")
        pids_limit = integer(pids.get("limit"), f"{_WHERE}.pids.limit", minimum=-1)
    cpus = {}
    for name in ("cpus", "mems"):
        text = opt_string(cpu.get(name), f"{_WHERE}.cpu.{name}") or None
        if text is not None and not _CPU_LIST.match(text):
            raise ConfigError(f"{_WHERE}.cpu.{name}", f"{text!r} is not a list like 0-3,5 (cpuset(7) list format)")
        cpus[name] = text
    unified = []
    for key, value in sorted(obj(doc.get("unified", {}), f"{_WHERE}.unified").items()):
        if not _UNIFIED_KEY.match(key):
            raise ConfigError(f"{_WHERE}.unified.{key}", "not a cgroup v2 file name (controller.file, like "
                              "memory.high; no '/')")
        unified.append((key, string(value, f"{_WHERE}.unified.{key}")))
    return Resources(limit, amount(memory, "reservation", "memory"), swap, pids_limit,
                     amount(cpu, "shares", "cpu", minimum=0), amount(cpu, "quota", "cpu"),
                     amount(cpu, "period", "cpu", minimum=0), cpus["cpus"], cpus["mems"], tuple(unified))


def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] -> cpu.weight [1, 10000], as runc >= 1.3.2 and crun >= 1.23 convert it.

    The quadratic on a log scale maps the ends and the default onto each other (2 -> 1, 1024 -> 100,
    262144 -> 10000): weight = ceil(10^((l² + 125·l) / 612 - 7/34)) with l = log2(shares)
    (opencontainers/cgroups ConvertCPUSharesToCgroupV2Value, runc PR #4785; crun PR #1767). The older
    linear formula, `linear_shares_to_weight`, sent the default 1024 to 39, so a container with default
    shares got 39% of the weight of a process outside any container. 0 is "not set" and stays 0.
    """
    if shares == 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    level = math.log2(shares)
    return min(10000, max(1, math.ceil(10 ** ((level * level + 125 * level) / 612.0 - 7.0 / 34.0))))


def linear_shares_to_weight(shares: int) -> int:
    """The conversion before runc 1.3.2 and crun 1.23: 1 + ((shares - 2) · 9999) / 262142 (1024 -> 39)."""
    return 0 if shares == 0 else 1 + ((shares - 2) * 9999) // 262142


def controller_of(key: str) -> str:
    """The controller a v2 file belongs to: memory.high -> memory; cgroup.* files belong to no controller."""
    return key.split(".", 1)[0]


def plan(resources: Resources, version: int, faults: frozenset[str] = frozenset(), *,
         current_memory_limit: int | None = None) -> list[Write]:
    """The writes that apply `resources` on a cgroup `version` (1 or 2), in order; ConfigError when impossible.

    `current_memory_limit` (v1) is what memory.limit_in_bytes holds now; None for a fresh cgroup (unlimited).
    """
    if "limit-and-reservation-swapped" in faults:  # FAULT: the hard limit gets the reservation, and back
        resources = dataclasses.replace(resources, memory_limit=resources.memory_reservation,
                                        memory_reservation=resources.memory_limit)
    period = resources.cpu_period
    if period is not None and not PERIOD_RANGE[0] <= period <= PERIOD_RANGE[1]:
        if "period-clamped" in faults:  # FAULT: an impossible period is quietly moved into range
            period = min(max(period, PERIOD_RANGE[0]), PERIOD_RANGE[1])
        else:
            raise ConfigError(f"{_WHERE}.cpu.period", f"{period} µs is outside [{PERIOD_RANGE[0]}, "
                              f"{PERIOD_RANGE[1]}] (the kernel's CFS period bounds: 1 ms to 1 s)")
    writes = _cpuset(resources, faults)
    writes += _memory_v2(resources, faults) if version == 2 else _memory_v1(resources, faults, current_memory_limit)
    writes += _pids(resources, faults)
    writes += _cpu(resources, version, period, faults)
    if "unified-ignored" in faults:  # FAULT: resources.unified is skipped entirely (no error on v1, no writes)
        return writes
    if resources.unified:
        if version != 2:
            raise ConfigError(f"{_WHERE}.unified", "unified resources need cgroup v2; this host's controllers are "
                              "cgroup v1 (runc: \"invalid configuration: cannot use unified on cgroup v1\")")
        writes += [Write(controller_of(key), key, value, f"{_WHERE}.unified.{key}") for key, value in resources.unified]
    return writes


def _cpuset(resources: Resources, faults: frozenset[str]) -> list[Write]:
    if "cpuset-ignored" in faults:  # FAULT: cpuset.cpus and cpuset.mems are not written
        return []
    return [Write("cpuset", f"cpuset.{name}", value, f"{_WHERE}.cpu.{name}")
            for name, value in (("cpus", resources.cpu_cpus), ("mems", resources.cpu_mems)) if value is not None]


def _memory_v2(resources: Resources, faults: frozenset[str]) -> list[Write]:
    writes = []
    limit, swap = resources.memory_limit, resources.memory_swap
    if swap is not None or limit == -1:  # runc: an unlimited memory with no swap set means unlimited swap too
        if swap is None or swap == -1:
            value = "max"
        elif "swap-not-converted" in faults:  # FAULT: the memory+swap total taken as the swap alone
            value = str(swap)
        else:
            assert limit is not None  # parse_resources: a positive swap needs a positive limit
            value = str(swap - limit)
        writes.append(Write("memory", "memory.swap.max", value, f"{_WHERE}.memory.swap",
                            optional=value in ("max", "0")))
    if limit is not None:
        target = "memory.max"
        if "memory-limit-wrong-file" in faults:  # FAULT: the limit goes to the throttling file
            target = "memory.high"
        writes.append(Write("memory", target, _v2_number(limit), f"{_WHERE}.memory.limit"))
    reservation = resources.memory_reservation
    if "reservation-ignored" in faults:  # FAULT: memory.low is not written
        reservation = None
    if reservation is not None:
        writes.append(Write("memory", "memory.low", _v2_number(reservation),
                            f"{_WHERE}.memory.reservation"))
    return writes


def _memory_v1(resources: Resources, faults: frozenset[str], current: int | None) -> list[Write]:
    limit, swap = resources.memory_limit, resources.memory_swap
    memsw = None
    if swap == -1 or (swap is None and limit == -1):
        memsw = -1
    elif swap is not None:
        assert limit is not None
        memsw = swap
        if "swap-not-converted" in faults:  # FAULT: the total taken as the swap alone, the limit added to it
            memsw = swap + limit
    writes = []
    if limit is not None:
        target = "memory.limit_in_bytes"
        if "memory-limit-wrong-file" in faults:  # FAULT: the limit goes to the soft limit
            target = "memory.soft_limit_in_bytes"
        writes.append(Write("memory", target, str(limit), f"{_WHERE}.memory.limit"))
    if memsw is not None:
        swap_write = Write("memory", "memory.memsw.limit_in_bytes", str(memsw), f"{_WHERE}.memory.swap",
                           optional=memsw == -1)
        # memsw >= limit at every moment: raise memsw first when going up from a lower limit, or to unlimited.
        before = current if current is not None and current >= 0 else None
        if memsw == -1 or (before is not None and before < memsw):
            writes.insert(0, swap_write)
        else:
            writes.append(swap_write)
    reservation = resources.memory_reservation
    if "reservation-ignored" in faults:  # FAULT: the soft limit is not written
        reservation = None
    if reservation is not None:
        writes.append(Write("memory", "memory.soft_limit_in_bytes", str(reservation),
                            f"{_WHERE}.memory.reservation"))
    return writes


def _pids(resources: Resources, faults: frozenset[str]) -> list[Write]:
    limit = resources.pids_limit
    if limit is None:
        return []
    if "pids-limit-ignored" in faults:  # FAULT: pids.max is not written
        return []
    value = "max" if limit == -1 else str(limit)
    if limit == 0 and "pids-zero-unlimited" in faults:  # FAULT: 0 read as "no limit"
        value = "max"
    return [Write("pids", "pids.max", value, f"{_WHERE}.pids.limit")]


def _cpu(resources: Resources, version: int, period: int | None, faults: frozenset[str]) -> list[Write]:
    writes = []
    shares = resources.cpu_shares
    if shares is not None:
        if "wrong-shares-conversion" in faults:  # FAULT: v2 the old linear formula, v1 the v2 weight as shares
            writes.append(Write("cpu", "cpu.weight", str(linear_shares_to_weight(shares)), f"{_WHERE}.cpu.shares")
                          if version == 2 else
                          Write("cpu", "cpu.shares", str(shares_to_weight(shares)), f"{_WHERE}.cpu.shares"))
        elif version == 2:
            writes.append(Write("cpu", "cpu.weight", str(shares_to_weight(shares)), f"{_WHERE}.cpu.shares"))
        else:
            writes.append(Write("cpu", "cpu.shares", str(shares), f"{_WHERE}.cpu.shares"))
    quota = resources.cpu_quota
    if quota is None and period is None:
        return writes
    if "cpu-quota-ignored" in faults:  # FAULT: no quota (nor period) is written at all
        return writes
    if period is None:
        period = DEFAULT_PERIOD
    if "cpu-period-ignored" in faults:  # FAULT: the quota always goes with the default period
        period = DEFAULT_PERIOD
    if version == 2:
        writes.append(Write("cpu", "cpu.max", f"{'max' if quota in (None, -1) else quota} {period}",
                            f"{_WHERE}.cpu.quota" if quota is not None else f"{_WHERE}.cpu.period"))
    else:
        writes.append(Write("cpu", "cpu.cfs_period_us", str(period), f"{_WHERE}.cpu.period"))
        if quota is not None:
            writes.append(Write("cpu", "cpu.cfs_quota_us", str(quota), f"{_WHERE}.cpu.quota"))
    return writes


def _v2_number(value: int) -> str:
    return "max" if value == -1 else str(value)
