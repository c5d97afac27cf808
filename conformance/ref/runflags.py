"""`docker run`'s resource flags as OCI linux.resources: --memory, --memory-swap, --pids-limit, --cpus...

The flags mean what Docker's mean (docker run reference, moby daemon/oci_linux.go), so `conformance
ref run --memory 64m IMAGE` and `docker run --memory 64m IMAGE` ask the kernel for the same thing:

| flag | linux.resources |
|---|---|
| --memory 64m | memory.limit = 67108864 (k, m, g, t suffixes are powers of 1024, as Docker's RAMInBytes) |
| --memory-swap 128m | memory.swap = 134217728, the memory+swap total; -1 is unlimited |
| --memory-reservation 32m | memory.reservation |
| --pids-limit 100 | pids.limit (-1 unlimited) |
| --cpus 1.5 | cpu.quota = 150000, cpu.period = 100000 (moby: NanoCPUs * period / 1e9) |
| --cpu-quota, --cpu-period | cpu.quota, cpu.period |
| --cpu-shares 512 | cpu.shares |
| --cpuset-cpus 0-1, --cpuset-mems 0 | cpu.cpus, cpu.mems |

One difference: Docker gives a container with --memory and no --memory-swap as much swap again as
memory (memory.swap = 2 * memory); here no swap limit is set unless asked for.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from typing import Any

from conformance.ref.specread import ConfigError

#: flag (without "--") -> (group, field in linux.resources, kind, help)
FLAGS: dict[str, tuple[str, str, str, str]] = {
    "memory": ("memory", "limit", "bytes", "memory limit, like 64m or 1g (linux.resources.memory.limit)"),
    "memory-swap": ("memory", "swap", "bytes", "memory+swap limit; -1 for unlimited swap (memory.swap)"),
    "memory-reservation": ("memory", "reservation", "bytes", "soft memory limit (memory.reservation)"),
    "pids-limit": ("pids", "limit", "int", "most processes and threads at once; -1 for unlimited (pids.limit)"),
    "cpus": ("cpu", "quota", "cpus", "CPUs' worth of time per period, like 1.5 (cpu.quota over a 100 ms cpu.period)"),
    "cpu-quota": ("cpu", "quota", "int", "CPU time per period in µs (cpu.quota)"),
    "cpu-period": ("cpu", "period", "int", "the CFS period in µs, 1000 to 1000000 (cpu.period)"),
    "cpu-shares": ("cpu", "shares", "int", "relative CPU weight, 2 to 262144, default 1024 (cpu.shares)"),
    "cpuset-cpus": ("cpu", "cpus", "text", "the CPUs allowed, like 0-1 or 0,2 (cpu.cpus)"),
    "cpuset-mems": ("cpu", "mems", "text", "the memory nodes allowed, like 0 (cpu.mems)"),
}
_BYTES = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp])?i?b?$", re.IGNORECASE)
_PERIOD = 100000  # µs: Docker's period for --cpus


def parse_bytes(text: str, flag: str = "memory") -> int:
    """`64m` -> 67108864: a number with an optional k, m, g, t or p (powers of 1024), as Docker's RAMInBytes."""
    if text.strip() == "-1":
        return -1
    found = _BYTES.match(text.strip())
    if not found:
        raise ConfigError(f"--{flag}", f"{text!r} is not a size (a number with an optional unit: 512k, 64m, 1g)")
    power = " kmgtp".index((found.group(2) or " ").lower())
    return int(float(found.group(1)) * 1024**power)


def resources_from_flags(flags: Mapping[str, str]) -> dict[str, Any]:
    """linux.resources for flag name (without "--") -> value; ConfigError naming the flag for a bad one."""
    resources: dict[str, dict[str, Any]] = {}
    for flag, text in flags.items():
        if flag not in FLAGS:
            raise ConfigError(f"--{flag}", f"not a resource flag (known: {', '.join('--' + f for f in FLAGS)})")
        group, field, kind, _help = FLAGS[flag]
        value: Any
        if kind == "bytes":
            value = parse_bytes(str(text), flag)
        elif kind == "text":
            value = str(text)
        elif kind == "cpus":
            try:
                cpus = float(text)
            except ValueError:
                raise ConfigError(f"--{flag}", f"{text!r} is not a number of CPUs, like 0.5 or 2") from None
            value = round(cpus * _PERIOD)
            if value < 1000:  # the kernel's smallest quota is 1 ms
                raise ConfigError(f"--{flag}", f"{text}: at least 0.01 CPUs (a quota of 1 ms per 100 ms period)")
            resources.setdefault("cpu", {})["period"] = _PERIOD
        else:
            try:
                value = int(text)
            except ValueError:
                raise ConfigError(f"--{flag}", f"{text!r} is not an integer") from None
        resources.setdefault(group, {})[field] = value
    return resources


def add_resource_flags(parser: argparse.ArgumentParser) -> None:
    """Add the flags above to a command line (argparse dest: the flag with "_" for "-")."""
    group = parser.add_argument_group("resources (a cgroup for the container, as docker run's flags)")
    for flag, (_group, _field, kind, text) in FLAGS.items():
        group.add_argument(f"--{flag}", metavar="N" if kind != "text" else "LIST", default=None, help=text)


def resources_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """linux.resources from a namespace parsed with add_resource_flags' flags (empty when none was given)."""
    given = {flag: getattr(args, flag.replace("-", "_")) for flag in FLAGS}
    return resources_from_flags({flag: value for flag, value in given.items() if value is not None})
