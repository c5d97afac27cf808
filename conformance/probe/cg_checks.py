"""The "cg.run" action: a busybox container with resource limits, its cgroup read from the host.

The container runs a workload script (a memory hog, a fork loop, a CPU hog...) and stops at named
checkpoints (`at NAME` in the script); at each one the probe reads the container's cgroup from the host
(the files of the runtime's own making, found through /proc/<init>/cgroup) and does the checkpoint's
steps (freeze and thaw through the runtime, sample CPU accounting over a window), then lets the script
go on. After the container exits the probe looks again: is the cgroup gone, is anything left in it.

Cgroups the run made are named `conformance-...` (the cgroupsPath the OCI runtimes get) and are removed
by the sandbox whatever the runtime did, killing what is left in them. See
conformance/scenarios/cgroups.py for the contract.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

from conformance import PREFIX
from conformance.probe import cgroupfs
from conformance.probe.actions import Context, NotApplicable, action
from conformance.probe.cg_view import Reader, container_paths, cputime_usec, relative_paths, waited_usec
from conformance.probe.ns_checks import _tar, busybox_rootfs, container_init, container_processes
from conformance.probe.ns_runners import Container, EngineRunner, Runner, runner_for

JsonDict = dict[str, Any]

_POLL = 0.01
#: Seconds a runtime gets to return after the container's first process exited, before it is deleted.
_LINGER = 10.0


@action("cg.run")
def cg_run(params: JsonDict, ctx: Context) -> JsonDict:
    """Run the workload once (or `runs` times with the same cgroupsPath) and report what the host saw."""
    runner = runner_for(ctx)
    if params.get("oci_only") and isinstance(runner, EngineRunner):
        raise NotApplicable(f"{runner.name} takes no config.json: linux.cgroupsPath is an OCI runtime field")
    found = cgroupfs.hierarchies()
    layout = cgroupfs.mode(found)
    os.chmod(ctx.sandbox.root, 0o711)
    workdir = ctx.sandbox.path("cg")
    os.mkdir(workdir, 0o711)
    rootfs = busybox_rootfs(os.path.join(workdir, "rootfs"))
    if isinstance(runner, EngineRunner):
        _tar(rootfs, rootfs + ".tar")
    binds = (_disk_dir(ctx),) if params.get("disk") else ()
    cgroups_path = f"/{PREFIX}{ctx.sandbox.run_id}-{os.urandom(3).hex()}"
    _sweep_ours(ctx, found, cgroups_path)
    result: JsonDict = {"mode": layout, "cgroups_path": cgroups_path, "page_size": os.sysconf("SC_PAGE_SIZE"),
                        "cpus": os.cpu_count(), "runs": []}
    for index in range(int(params.get("runs") or 1)):
        chan = os.path.join(workdir, f"chan{index}")
        os.mkdir(chan)
        os.chmod(chan, 0o777)
        for name in params.get("checkpoints") or {}:
            fifo = os.path.join(chan, f"go.{name}")
            os.mkfifo(fifo)
            os.chmod(fifo, 0o666)
        cid = f"{PREFIX}{ctx.sandbox.run_id}-{os.urandom(3).hex()}"
        box = Container(cid=cid, workdir=os.path.join(workdir, f"run{index}"), rootfs=rootfs, chan=chan,
                        script=str(params["script"]), namespaces=tuple(params.get("namespaces") or ()),
                        user_ns=None, hostname=None, domainname=None, readonly_root=False, join=None,
                        raw_namespaces=None, caps=tuple(params.get("caps") or ()), env={"CONFORMANCE_CID": cid},
                        resources=params.get("resources"), cgroups_path=cgroups_path,
                        engine_flags=dict(params.get("engine_flags") or {}), binds=binds)
        os.mkdir(box.workdir, 0o711)
        result["runs"].append(_run_once(runner, box, params, found, ctx))
    return result


def _run_once(runner: Runner, box: Container, params: JsonDict, found: list[cgroupfs.Hierarchy],
              ctx: Context) -> JsonDict:
    version = 2 if cgroupfs.mode(found) == "v2" else 1
    seen: JsonDict = {"exit": None, "started": False, "at": {}, "paths": {}, "after": {}, "lingered": False}
    out_path, err_path = os.path.join(box.workdir, "stdout"), os.path.join(box.workdir, "stderr")
    timeout = float(params.get("timeout") or 60.0)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        child = runner.start(box, out.fileno(), err.fileno())
        try:
            seen["exit"] = _watch(child, runner, box, params, found, version, seen, ctx, timeout)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
                runner.stop(box)
    seen["stdout"] = _read(out_path)
    seen["stderr"] = _read(err_path)[-4000:]
    seen["started"] = os.path.exists(os.path.join(box.chan, "started"))
    seen["files"] = {name: _read(os.path.join(box.chan, name))[-4000:] for name in sorted(os.listdir(box.chan))
                     if name.startswith("out.")}
    # docker and podman remove the cgroup a moment after `run` returns, and dockerd or conmon may take
    # seconds on a loaded host; the OCI runtimes remove it before they exit
    seen["after"] = _after(seen["paths"], box.cid, found, 30.0 if isinstance(runner, EngineRunner) else 5.0)
    return seen


def _watch(child: subprocess.Popen[bytes], runner: Runner, box: Container, params: JsonDict,
           found: list[cgroupfs.Hierarchy], version: int, seen: JsonDict, ctx: Context, timeout: float) -> int:
    """Wait for the container; at each checkpoint read the cgroup, do the steps, release the script."""
    deadline = time.monotonic() + timeout
    pending = list((params.get("checkpoints") or {}).items())
    init: int | None = None
    init_gone: float | None = None
    while child.poll() is None:
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"the container ran past {timeout:.0f}s")
        if pending and os.path.exists(os.path.join(box.chan, f"at.{pending[0][0]}")):
            name, steps = pending.pop(0)
            seen["at"][name] = _checkpoint(runner, box, steps, params, found, version, seen, ctx)
            init = init or seen["at"][name].get("init_pid")
            _release(os.path.join(box.chan, f"go.{name}"), child, init)
            continue
        if init is not None and not pending and not os.path.exists(f"/proc/{init}"):
            init_gone = init_gone or now
            if now - init_gone > _LINGER:
                # The container's first process is gone but the runtime still waits (crun without a PID
                # namespace waits for every process): deleting the container is the user's next step.
                seen["lingered"] = True
                runner.stop(box)
                child.wait(timeout=30)
                break
        time.sleep(_POLL)
    return int(child.returncode)


def _checkpoint(runner: Runner, box: Container, steps: list[str], params: JsonDict,
                found: list[cgroupfs.Hierarchy], version: int, seen: JsonDict, ctx: Context) -> JsonDict:
    init = container_init(box.cid)
    pid = init.get("pid")
    here: JsonDict = {"init_pid": pid}
    if pid is None:
        return here
    paths = container_paths(pid, found)
    for key, where in paths.items():
        seen["paths"].setdefault(key, where)
    _remove_later(ctx, paths)
    here["cgroup"] = relative_paths(pid, found)
    here["probe_cgroup"] = relative_paths(os.getpid(), found)  # the runtime's, for ref, runc and crun
    reader = Reader(paths, version)
    here["knobs"] = reader.read_all()
    here["raw"] = {name: reader.raw(name) for name in params.get("raw") or ()}
    here["files"] = dict(reader.files)
    procs = reader.procs()
    here["procs"] = len(procs)
    here["container_processes"] = len(container_processes(box.cid))
    for step in steps:
        if step == "freeze":
            here["freeze"] = _freeze(runner, box, reader)
        elif step == "cpu":
            here["cpu"] = _cpu_window(reader, float(params.get("cpu_window") or 1.0))
        elif step != "read":
            raise ValueError(f"unknown checkpoint step {step!r}: read, freeze or cpu")
    return here


def _freeze(runner: Runner, box: Container, reader: Reader) -> JsonDict:
    """Pause through the runtime: does the counter stop, does the freezer say frozen; then resume."""
    count = os.path.join(box.chan, "count")
    before = _read(count)
    runner.pause(box)
    frozen = _poll(lambda: reader.frozen() is True, 10.0)
    # a running loop bumps the counter thousands of times in this window; sampled often, as a single read
    # can land between the loop's truncate and its write and see an empty file (about half of them)
    paused = _counter_values(count, 0.5)
    state_while = reader.frozen()
    runner.resume(box)
    thawed = _poll(lambda: reader.frozen() is False, 10.0)
    last = paused[-1] if paused else None
    resumed = _poll(lambda: _read(count).strip() not in ("", last), 10.0)
    return {"counter_before": before, "frozen_reported": frozen, "state_while_paused": state_while,
            "values_while_paused": len(set(paused)), "progress_while_paused": len(set(paused)) > 1,
            "thaw_reported": thawed, "progress_after_resume": resumed}


def _counter_values(path: str, seconds: float) -> list[str]:
    """The counter's values read every few ms over `seconds`, in order, empty reads left out."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while True:
        value = _read(path).strip()
        if value:
            seen.append(value)
        if time.monotonic() > deadline:
            return seen
        time.sleep(0.01)


def _cpu_window(reader: Reader, window: float) -> JsonDict:
    """CPU accounting over `window` seconds of wall time, and the container's own CPU time beside it.

    Each reading is stamped with the midpoint of clock reads taken just before and after it, and taken
    again when those are far apart: a probe descheduled between a reading and its clock (a loaded host, a
    TCG guest's vCPU) would otherwise compare counters and wall time of different intervals.
    """
    procs = reader.procs()
    start_stat, start = _stamped(reader.cpu_stat)
    start_cpu, _ = _stamped(lambda: cputime_usec(procs))
    start_wait = waited_usec(procs)
    time.sleep(window)
    end_stat, end = _stamped(reader.cpu_stat)
    end_cpu, _ = _stamped(lambda: cputime_usec(reader.procs()))
    end_wait = waited_usec(procs)
    delta = {key: end_stat[key] - start_stat[key] for key in end_stat if key in start_stat}
    waited = sum(end_wait[pid] - start_wait[pid] for pid in end_wait if pid in start_wait) if end_wait else None
    return {"wall_usec": int((end - start) * 1_000_000), "stat_delta": delta, "process_cpu_usec": end_cpu - start_cpu,
            "waited_usec": waited}


_T = TypeVar("_T")


def _stamped(read: Callable[[], _T], spread: float = 0.02, tries: int = 5) -> tuple[_T, float]:
    """read() and the monotonic time it stands for; retaken (up to `tries`) while it took over `spread` s."""
    assert tries >= 1
    for attempt in range(tries):
        before = time.monotonic()
        value = read()
        after = time.monotonic()
        if after - before <= spread or attempt == tries - 1:
            break
    return value, (before + after) / 2


def _after(paths: dict[str, str], cid: str, found: list[cgroupfs.Hierarchy], wait: float) -> JsonDict:
    """After the exit: which of the container's cgroup dirs still exist, and what is still inside them."""
    # the probe's own cgroup (where a runtime that never moved the container in left it) never goes away:
    # waiting for it would only make every such faulty run take the whole wait
    waited = set(paths.values()) - set(container_paths(os.getpid(), found).values())
    deadline = time.monotonic() + wait  # a sound runtime is not kept waiting: the loop ends when they are gone
    while time.monotonic() < deadline and any(os.path.isdir(p) for p in waited):
        time.sleep(0.05)
    left = {key: os.path.isdir(where) for key, where in paths.items()}
    procs: set[int] = set()
    for where in paths.values():
        with contextlib.suppress(OSError):
            procs.update(int(p) for p in cgroupfs.read(os.path.join(where, "cgroup.procs")).split())
    return {"exists": left, "procs_left": len(procs), "container_processes": len(container_processes(cid))}


def _remove_later(ctx: Context, paths: dict[str, str]) -> None:
    """Make the sandbox remove the run's own cgroups (never the probe's, never an engine's parent)."""
    for where in set(paths.values()):
        if os.path.basename(where).startswith(PREFIX) and where not in _REMOVAL:
            _REMOVAL.add(where)
            ctx.sandbox.defer(f"remove cgroup {where}", _remover(where))


_REMOVAL: set[str] = set()


def _remover(where: str) -> Callable[[], None]:
    return lambda: _remove(where)


def _remove(where: str) -> None:
    _REMOVAL.discard(where)
    with contextlib.suppress(FileNotFoundError):
        _thaw(where)
        cgroupfs.remove_cgroup(where)


def _thaw(where: str) -> None:
    """A frozen cgroup's processes cannot die; thaw first (a faulty pause may have left it frozen)."""
    for name, value in (("cgroup.freeze", "0"), ("freezer.state", "THAWED")):
        with contextlib.suppress(OSError):
            cgroupfs.write(os.path.join(where, name), value)


def _sweep_ours(ctx: Context, found: list[cgroupfs.Hierarchy], cgroups_path: str) -> None:
    """Remove the scenario's cgroupsPath dirs in every hierarchy at the end, whoever made them."""
    for h in found:
        where = os.path.join(h.mountpoint, cgroups_path.lstrip("/"))
        ctx.sandbox.defer(f"remove cgroup {where}", _remover(where))


def _disk_dir(ctx: Context) -> tuple[str, str]:
    """A dir on a disk-backed filesystem (/var/tmp), bound at /disk: page cache there can be reclaimed."""
    where = f"/var/tmp/{PREFIX}{ctx.sandbox.run_id}-{os.urandom(3).hex()}"
    os.mkdir(where, 0o777)
    os.chmod(where, 0o777)

    def remove() -> None:
        import shutil  # noqa: PLC0415

        shutil.rmtree(where, ignore_errors=True)

    ctx.sandbox.defer(f"rm -r {where}", remove)
    return where, "/disk"


def _release(fifo: str, child: subprocess.Popen[bytes], init: int | None) -> None:
    """Let the script past its checkpoint: it is blocked reading the fifo, so open it and write a line.

    Nothing to release once the script is gone (the runtime may outlive it: crun without a PID namespace
    waits for stragglers, and _watch deals with that).
    """
    deadline = time.monotonic() + 30.0
    while child.poll() is None and (init is None or os.path.exists(f"/proc/{init}")):
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"the container's script did not wait at {fifo} for 30 s after reaching "
                                   "its checkpoint: its `at` helper never read the fifo") from None
            time.sleep(_POLL)
            continue
        try:
            os.write(fd, b"go\n")
        finally:
            os.close(fd)
        return


def _poll(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""

