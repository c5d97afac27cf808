"""Scenarios of the cgroups area: a busybox container with limits, a workload, and its cgroup read from the host.

One scenario kind, "cg.run", is run by every runtime: the reference runtime, runc and crun get the limits
as config.json's linux.resources with a cgroupsPath named `/conformance-<run>-<hex>`; docker and podman
get the same limits as their run flags (--memory, --pids-limit, --cpu-quota...). The script stops at
checkpoints (`at NAME`) where the probe reads the container's cgroup from the host.

The contract (plain JSON both ways):

params = {
  "script":      "..."      run as `/bin/sh -c SCRIPT` (busybox applets); PRELUDE is prepended;
  "resources":   {...}      OCI linux.resources: memory {limit, reservation, swap}, pids {limit},
                            cpu {quota, period, shares, cpus, mems}, unified {file: value};
  "engine_flags": {"cpus": "0.5"}   engine-only flags (the OCI runtimes are not applicable);
  "namespaces":  [...]      as in the namespaces area (default: all but user);
  "caps":        [...]      capabilities beyond the defaults (CAP_SYS_ADMIN to mount a cgroupfs);
  "checkpoints": {NAME: ["read" | "freeze" | "cpu", ...]}   in the order the script reaches them;
  "raw":         ["memory.oom.group", ...]   v2 files to read verbatim at each checkpoint;
  "disk":        false      bind a dir of a disk-backed filesystem at /disk (page cache that can be reclaimed);
  "runs":        1          run the container this many times with the same cgroupsPath;
  "cpu_window":  1.0        seconds of wall time the "cpu" step samples over;
  "timeout":     60         seconds a run may take;
  "oci_only":    false      not applicable to docker and podman (a config.json field such as cgroupsPath);
}

Files the script writes to /chan/out.* come back in the run's "files" (a fork past pids.max cannot run
grep, so the script leaves its stderr there for the probe to read).

observation = {
  "mode": "v1" | "v2" | "hybrid",       the host's cgroup layout (every result names it);
  "cgroups_path": "/conformance-...",   what the OCI runtimes were given;
  "page_size": int, "cpus": int,       the host's;
  "runs": [{
    "exit": int, "started": bool (the script began), "stdout": "...", "stderr": "...", "files": {...},
    "at": {NAME: {"init_pid", "cgroup": {controller | "unified": path relative to its hierarchy},
                  "probe_cgroup": {...} the probe's own (the OCI runtimes' parent),
                  "knobs": {...see conformance/probe/cg_view.py...}, "files": {knob: file read},
                  "raw": {file: text}, "procs": int (in cgroup.procs),
                  "freeze": {...} (step "freeze"), "cpu": {"wall_usec", "stat_delta", "process_cpu_usec",
                  "waited_usec" (schedstat run_delay of its processes; null without schedstat)}}},
    "after": {"exists": {controller: bool}, "procs_left": int, "container_processes": int},
    "lingered": bool,   the runtime was still running 10 s after the first process exited, so the probe
                        deleted the container (runc/crun `delete --force`, `rm --force`) before looking;
  }],
}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from conformance.scenarios import Scenario
from conformance.scenarios.namespaces import DEFAULT_NAMESPACES, lines

MIB = 1 << 20

#: Shell helpers: `at NAME` stops at a checkpoint until the probe has read the cgroup (a fifo read: the
#: wait forks nothing, so it adds no task and no CPU time to what the probe measures).
PRELUDE = ": > /chan/started; at() { : > /chan/at.$1; read _ < /chan/go.$1; }; "

#: Allocates anonymous memory in a child shell, a string that quadruples each round, up to 256 MiB: far past
#: any limit a test sets, yet bounded, so a runtime that limits nothing cannot take the host's memory.
MEMORY_HOG = "sh -c 'x=a; while [ ${#x} -lt 268435456 ]; do x=$x$x$x$x; done; echo grown'"
#: Burns one CPU in a background subshell for up to `n` seconds (killed at exit by the pid namespace).
CPU_HOG = "(while :; do :; done) & HOG=$!; "
#: A background loop that bumps /chan/count as fast as it can: the probe watches it stop when frozen.
COUNTER = "(i=0; while :; do i=$((i+1)); echo $i > /chan/count; done) & "


def run(script: str, *, resources: Mapping[str, Any] | None = None, checkpoints: Mapping[str, list[str]] | None = None,
        namespaces: Iterable[str] = DEFAULT_NAMESPACES, caps: Iterable[str] = (), raw: Iterable[str] = (),
        engine_flags: Mapping[str, str] | None = None, disk: bool = False, runs: int = 1,
        cpu_window: float = 1.0, timeout: float = 60.0, oci_only: bool = False) -> Scenario:
    """A container with these limits running script; see the module docstring."""
    return Scenario("cg.run", {
        "script": PRELUDE + script, "resources": dict(resources or {}),
        "checkpoints": {name: list(steps) for name, steps in (checkpoints or {}).items()},
        "namespaces": list(namespaces), "caps": list(caps), "raw": list(raw),
        "engine_flags": dict(engine_flags or {}), "disk": disk, "runs": runs, "cpu_window": cpu_window,
        "timeout": timeout, "oci_only": oci_only,
    })


def said(run_seen: Mapping[str, Any]) -> dict[str, str]:
    """The container's key=value output lines."""
    return lines(run_seen)


__all__ = ["COUNTER", "CPU_HOG", "MEMORY_HOG", "MIB", "PRELUDE", "Scenario", "run", "said"]
