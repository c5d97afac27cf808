"""A cgroup's usage and event counters in one vocabulary, whichever version's files hold them.

The names carry their unit (`_bytes`, `_usec`, `_count`), so v1's nanoseconds never meet v2's
microseconds. A counter the host's files do not have is absent, never guessed (v1 has no count of OOM
events, only of OOM kills; memory.events `high` exists only on v2).

| name | cgroup v2 | cgroup v1 |
|---|---|---|
| memory_usage_bytes | memory.current | memory.usage_in_bytes |
| memory_peak_bytes | memory.peak (5.19+) | memory.max_usage_in_bytes |
| memory_oom_count | memory.events oom | — |
| memory_oom_kill_count | memory.events oom_kill | memory.oom_control oom_kill (4.13+) |
| memory_max_count | memory.events max | memory.failcnt |
| memory_high_count | memory.events high | — |
| pids_current_count | pids.current | pids.current |
| pids_max_count | pids.events max | pids.events max |
| cpu_usage_usec | cpu.stat usage_usec | cpuacct.usage (ns) / 1000 |
| cpu_periods_count | cpu.stat nr_periods | cpu.stat nr_periods |
| cpu_throttled_count | cpu.stat nr_throttled | cpu.stat nr_throttled |
| cpu_throttled_usec | cpu.stat throttled_usec | cpu.stat throttled_time (ns) / 1000 |

Use `oom_kill`, not `oom`, to tell that a process was killed: v2 counts `oom` where the limit was hit,
which may be an ancestor (containerd PR #6323).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Protocol


class _Reader(Protocol):
    def read(self, path: str) -> str: ...


#: (name, controller, file, key in a keyed file or None for a single number, divisor)
_V2 = (("memory_usage_bytes", "memory", "memory.current", None, 1),
       ("memory_peak_bytes", "memory", "memory.peak", None, 1),
       ("memory_oom_count", "memory", "memory.events", "oom", 1),
       ("memory_oom_kill_count", "memory", "memory.events", "oom_kill", 1),
       ("memory_max_count", "memory", "memory.events", "max", 1),
       ("memory_high_count", "memory", "memory.events", "high", 1),
       ("pids_current_count", "pids", "pids.current", None, 1),
       ("pids_max_count", "pids", "pids.events", "max", 1),
       ("cpu_usage_usec", "cpu", "cpu.stat", "usage_usec", 1),
       ("cpu_periods_count", "cpu", "cpu.stat", "nr_periods", 1),
       ("cpu_throttled_count", "cpu", "cpu.stat", "nr_throttled", 1),
       ("cpu_throttled_usec", "cpu", "cpu.stat", "throttled_usec", 1))
_V1 = (("memory_usage_bytes", "memory", "memory.usage_in_bytes", None, 1),
       ("memory_peak_bytes", "memory", "memory.max_usage_in_bytes", None, 1),
       ("memory_oom_kill_count", "memory", "memory.oom_control", "oom_kill", 1),
       ("memory_max_count", "memory", "memory.failcnt", None, 1),
       ("pids_current_count", "pids", "pids.current", None, 1),
       ("pids_max_count", "pids", "pids.events", "max", 1),
       ("cpu_usage_usec", "cpuacct", "cpuacct.usage", None, 1000),
       ("cpu_periods_count", "cpu", "cpu.stat", "nr_periods", 1),
       ("cpu_throttled_count", "cpu", "cpu.stat", "nr_throttled", 1),
       ("cpu_throttled_usec", "cpu", "cpu.stat", "throttled_time", 1000))


def read_stats(dir_for: Callable[[str], str | None], version: int, files: _Reader) -> dict[str, int]:
    """The counters of the cgroup whose directory per controller `dir_for` gives, as the table above names them."""
    found: dict[str, int] = {}
    cache: dict[str, str | None] = {}
    for name, controller, file, key, divisor in _V2 if version == 2 else _V1:
        directory = dir_for(controller)
        if directory is None:
            continue
        path = posixpath.join(directory, file)
        if path not in cache:
            try:
                cache[path] = files.read(path)
            except OSError:
                cache[path] = None
        text = cache[path]
        if text is None:
            continue
        value = _number(text, key)
        if value is not None:
            found[name] = value // divisor
    return found


def _number(text: str, key: str | None) -> int | None:
    if key is None:
        word = text.strip()
        return int(word) if word.isdigit() else None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key and parts[1].isdigit():
            return int(parts[1])
    return None
