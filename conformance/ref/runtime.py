"""The reference OCI runtime: `run_bundle` runs a bundle in the foreground, as `runc run --bundle DIR ID` does.

runtime-spec runtime.md § Lifecycle, folded into one call (create, start, wait, delete): the config is
read and checked (runspec.py), namespaces given by path are opened and their type checked here in the
runtime (config-linux.md: "If a path is specified that does not refer to a namespace of the given
type, the runtime MUST generate an error"), then the runtime forks; its children (nsinit.py) enter the
namespaces, build the filesystem view (rootfs.py) and exec the process. The runtime meanwhile writes
the user namespace's id maps when asked (idmap.py) and waits.

Whatever happens, no process of the container outlives the call: on the timeout, an exception, SIGINT
or SIGTERM the runtime SIGKILLs the container's init, which takes the whole PID namespace with it
(pid_namespaces(7)), lets its first child relay the status and reaps that. After SIGINT or SIGTERM the
signal is raised again once the container is gone, so the caller's own handling (KeyboardInterrupt, a
probe's cleanup, the default action) happens as if the runtime had not been there. The runtime writes
nothing on the host, in the bundle or anywhere else: its mounts live and die with the container's
mount namespace. The one exception is the container's cgroup, made only when config.json gives a
linux.cgroupsPath or a limit (memory, pids, cpu, unified; cgmanager.py): it is made and limited before
the container's first process exists, the init is moved in before it runs anything of the container,
and after the container, whatever ended it, everything still in the cgroup is killed (a process moved
in from outside, or left by a container without a PID namespace) and the cgroup removed.

The container's exit status is returned as a shell gives it: the exit code, or 128+N after signal N.
A container that cannot be started raises `ContainerError` with the step that failed; a program that
cannot be executed is the container's own failure (status 127 or 126, the reason on its stderr).

`FAULTS` are deliberately wrong behaviours, for the suite to show it catches each one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import select
import signal
import time

from conformance.ref import nsapi
from conformance.ref.cglayout import CgroupError, Layout, detect_layout
from conformance.ref.cglimits import plan as plan_limits
from conformance.ref.cgmanager import ContainerCgroup, default_path
from conformance.ref.errors import RefError
from conformance.ref.idmap import write_maps
from conformance.ref.nsinit import Channel, Plan, describe, first_child
from conformance.ref.runspec import NAMESPACE_FLAGS, Namespace, Spec, load_bundle, parse_config
from conformance.ref.stopsignals import STOP_SIGNALS, Stopped, held_signals, stop_signals_raise

#: Faulty variants by behaviour: name -> what the runtime then does wrong.
FAULTS: dict[str, str] = {
    "no-pid-namespace": "ignores the pid namespace: not PID 1, sees the host's processes, leaves its children",
    "chroot-instead-of-pivot-root": "chroots into the rootfs: the host's tree stays mounted in the container's "
                                    "mount namespace, reachable by a chroot escape or setns",
    "shared-net-namespace": "ignores the network namespace: the container uses the host's network",
    "no-uid-map": "creates the user namespace but never writes uid_map/gid_map (the container cannot start)",
    "propagation-left-shared": "makes only / private: other mounts keep the host's propagation, so mounts "
                               "cross between host and container",
    "shared-uts-namespace": "ignores the UTS namespace (and so leaves hostname and domainname alone)",
    "shared-ipc-namespace": "ignores the IPC namespace: SysV IPC and POSIX queues are the host's",
    "no-masked-paths": "does not mask linux.maskedPaths: /proc/kcore and the rest stay readable",
    "no-readonly-paths": "does not make linux.readonlyPaths read-only: /proc/sys stays writable",
    "no-cgroup-namespace": "ignores the cgroup namespace: /proc/self/cgroup shows the host's paths",
    "old-root-left-mounted": "pivot_root without detaching the old root: the host's tree stays mounted over /",
    "unlisted-namespaces-created": "creates network, ipc, uts and cgroup namespaces also when the config lists none",
    "namespace-path-ignored": "creates a new namespace where linux.namespaces gives a path to join",
    "namespace-type-unchecked": "takes a namespace path of another type as no path (a new one) instead of failing",
    "duplicate-namespaces-accepted": "keeps the first of two linux.namespaces entries of one type instead of failing",
    "no-default-mounts": "skips the config's /dev/pts, /dev/shm and /dev/mqueue mounts",
    "readonly-root-ignored": "leaves the root writable although root.readonly is true",
    # cgroups (cglimits.py and cgmanager.py hold the branches of the limit and manager faults)
    "memory-limit-wrong-file": "writes memory.limit to memory.high (v2) or memory.soft_limit_in_bytes (v1) "
                               "instead of the hard limit",
    "not-moved-in": "makes and limits the cgroup, but the container's processes stay in the runtime's cgroup",
    "cgroup-left-behind": "kills the container's processes but does not remove its cgroup",
    "stragglers-left": "kills nothing a container left running: not as the subreaper of a container without a "
                       "PID namespace, not at the cgroup's removal (so the cgroup stays too)",
    "wrong-shares-conversion": "cpu.shares: v2 gets the old linear weight formula, v1 the v2 weight as shares",
    "pids-limit-ignored": "does not write pids.max",
    "pids-zero-unlimited": "writes pids.limit 0 as max (no limit) instead of 0",
    "cpu-period-ignored": "writes the quota with the default period 100000 whatever cpu.period says",
    "cpu-quota-ignored": "writes no CPU quota (nor period) at all",
    "period-clamped": "moves a cpu.period outside [1000, 1000000] into range instead of failing",
    "cpuset-ignored": "does not write cpuset.cpus and cpuset.mems",
    "swap-not-converted": "takes memory.swap as the swap alone: v2 memory.swap.max = swap, v1 memsw = swap + limit",
    "reservation-ignored": "does not write memory.reservation (memory.low, v1 soft limit)",
    "limit-and-reservation-swapped": "writes memory.limit to the reservation's file and memory.reservation to "
                                     "the hard limit's",
    "unified-ignored": "skips linux.resources.unified (no error on v1, no writes on v2)",
    "freeze-ignored": "freeze() returns without freezing",
    "cgroupns-before-join": "creates the cgroup namespace before the process joins the container's cgroup, so "
                            "the namespace's root is the runtime's cgroup",
}

_ID = re.compile(r"^[A-Za-z0-9_+.-]+$")  # runc's container id rule
_GRACE = 5.0  # seconds the first child gets to relay the status after the init was killed


class ContainerError(RefError):
    """The container could not be started: which container, which step, what the kernel said."""


def run_bundle(bundle: str, container_id: str, *, faults: frozenset[str] = frozenset(), stdin: int | None = None,
               stdout: int | None = None, stderr: int | None = None, timeout: float | None = None) -> int:
    """Run the bundle's process to its end; its exit status (128+N when killed by signal N).

    stdin, stdout, stderr: descriptors to give the process (default: the runtime's own). timeout:
    seconds before the container is killed (its status is then 137, killed by SIGKILL).
    """
    unknown = sorted(set(faults) - FAULTS.keys())
    if unknown:
        raise ValueError(f"unknown runtime faults {unknown}; known: {', '.join(sorted(FAULTS))}")
    if not _ID.match(container_id):
        raise ContainerError(f"container id {container_id!r}: letters, digits, '_', '+', '.' and '-' only")
    bundle = os.path.abspath(bundle)
    spec = _load_deduplicated(bundle) if "duplicate-namespaces-accepted" in faults else load_bundle(bundle)
    if spec.linux.wants_cgroup:  # the limits are checked before anything exists
        plan_limits(spec.linux.resources, _layout(container_id).limits_version, frozenset(faults))
    plan = _plan(spec, bundle, frozenset(faults), (stdin, stdout, stderr), container_id)
    channel = Channel()
    cgroup: ContainerCgroup | None = None
    try:
        with stop_signals_raise():
            # Held until the runtime is ready to clean up after a stop (and in the children until they reset
            # their handlers), so no stop can fall between the fork and the supervision.
            held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                try:
                    if plan.cgroup:  # made and limited before the container exists
                        cgroup = _make_cgroup(spec, container_id, frozenset(faults))
                    child = os.fork()
                    if child == 0:
                        first_child(plan, channel, os.getppid())
                except BaseException:  # no child: nothing to supervise, give back what was taken
                    signal.pthread_sigmask(signal.SIG_SETMASK, held)
                    os.close(channel.up_read)
                    os.close(channel.down_write)
                    raise
                finally:
                    for fd, _kind in plan.joins:
                        os.close(fd)
                    channel.parent_side()
                status = _supervise(child, channel, plan, container_id, timeout, held, cgroup)
            except BaseException as exc:
                if cgroup is not None:
                    with held_signals():
                        _release_cgroup(cgroup, container_id, frozenset(faults), failing=exc)
                raise
            if cgroup is not None:
                with held_signals():
                    _release_cgroup(cgroup, container_id, frozenset(faults), failing=None)
            return status
    except Stopped as stopped:
        signal.raise_signal(stopped.signum)  # the caller's handler, now that the container is gone
        return 128 + signal.SIGKILL


def _layout(container_id: str) -> Layout:
    try:
        return detect_layout()
    except CgroupError as err:
        raise ContainerError(f"container {container_id}: {err}") from None


def _make_cgroup(spec: Spec, container_id: str, faults: frozenset[str]) -> ContainerCgroup:
    """The container's cgroup, limits written (cgmanager.py); nothing is left when that fails."""
    path = spec.linux.cgroups_path or default_path(container_id)
    try:
        return ContainerCgroup.create(_layout(container_id), path, spec.linux.resources, faults=faults)
    except CgroupError as err:
        raise ContainerError(f"container {container_id}: {err}") from None


def _release_cgroup(cgroup: ContainerCgroup, container_id: str, faults: frozenset[str],
                    failing: BaseException | None) -> None:
    """Kill what is left in the container's cgroup and remove it.

    A failure is an error of its own, unless another one is on its way already: then it is a note on that one.
    """
    try:
        if "cgroup-left-behind" in faults:  # FAULT: the processes are killed, the cgroup stays
            cgroup.kill()
        else:
            cgroup.remove()
    except CgroupError as err:
        if failing is None:
            raise ContainerError(f"container {container_id} ended, but its cgroup is left: {err}") from None
        failing.add_note(f"and its cgroup is left: {err}")


def _load_deduplicated(bundle: str) -> Spec:
    """FAULT duplicate-namespaces-accepted: the config with only the first entry of each namespace type."""
    with open(os.path.join(bundle, "config.json"), "rb") as handle:
        doc = json.loads(handle.read())
    seen: set[str] = set()
    kept = []
    for entry in (doc.get("linux") or {}).get("namespaces") or []:
        if isinstance(entry, dict) and entry.get("type") not in seen:
            seen.add(str(entry.get("type")))
            kept.append(entry)
    doc.setdefault("linux", {})["namespaces"] = kept
    return parse_config(doc, bundle)


def _plan(spec: Spec, bundle: str, faults: frozenset[str], stdio: tuple[int | None, int | None, int | None],
          container_id: str) -> Plan:
    """Which namespaces to create and join, once the faults have had their say."""
    kept = []
    for listed in spec.linux.namespaces:
        namespace = listed
        if namespace.type == "pid" and "no-pid-namespace" in faults:  # FAULT
            continue
        if namespace.type == "network" and "shared-net-namespace" in faults:  # FAULT
            continue
        if namespace.type == "uts" and "shared-uts-namespace" in faults:  # FAULT
            continue
        if namespace.type == "ipc" and "shared-ipc-namespace" in faults:  # FAULT
            continue
        if namespace.type == "cgroup" and "no-cgroup-namespace" in faults:  # FAULT
            continue
        if namespace.path and "namespace-path-ignored" in faults:  # FAULT
            namespace = dataclasses.replace(namespace, path=None)
        if namespace.path and "namespace-type-unchecked" in faults:  # FAULT: a wrong type becomes a new one
            try:
                os.close(_open_namespace(namespace.path, namespace.type, container_id))
            except ContainerError:
                namespace = dataclasses.replace(namespace, path=None)
        kept.append(namespace)
    if "unlisted-namespaces-created" in faults:  # FAULT
        types = {n.type for n in kept}
        kept += [Namespace(kind, None) for kind in ("network", "ipc", "uts", "cgroup") if kind not in types]
    joins: list[tuple[int, int]] = []
    try:
        for namespace in sorted((n for n in kept if n.path), key=lambda n: n.type != "user"):
            assert namespace.path is not None
            joins.append((_open_namespace(namespace.path, namespace.type, container_id), namespace.flag))
    except BaseException:
        for fd, _kind in joins:
            os.close(fd)
        raise
    new = [n for n in kept if not n.path]
    flags = sum(n.flag for n in new if n.type != "user")
    cgroup = spec.linux.wants_cgroup
    # The init makes its cgroup namespace once it is in the container's cgroup (nsinit.py), so the
    # namespace's root is that cgroup.
    late = cgroup and bool(flags & nsapi.CLONE_NEWCGROUP)
    if late and "cgroupns-before-join" in faults:  # FAULT: the namespace is made first, rooted at the runtime's
        late = False
    if late:
        flags &= ~nsapi.CLONE_NEWCGROUP
    return Plan(spec, bundle, faults, frozenset(n.type for n in kept), flags, any(n.type == "user" for n in new),
                tuple(joins), stdio, cgroup, late)


def _open_namespace(path: str, kind: str, container_id: str) -> int:
    """Open a namespace file and check it is of `kind` (ioctl_ns(2) NS_GET_NSTYPE)."""
    where = f"container {container_id}: linux.namespaces {kind} path {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise ContainerError(f"{where}: {err.strerror}") from None
    try:
        actual = nsapi.namespace_type(fd)
    except OSError:
        os.close(fd)
        raise ContainerError(f"{where}: not a namespace file (like /proc/PID/ns/{kind} or a bind mount of one)") \
            from None
    if actual != NAMESPACE_FLAGS[kind]:
        os.close(fd)
        names = {flag: name for name, flag in NAMESPACE_FLAGS.items()}
        raise ContainerError(f"{where}: is a {names.get(actual, hex(actual))} namespace, not {kind}")
    return fd


def _supervise(child: int, channel: Channel, plan: Plan, container_id: str, timeout: float | None,
               mask: set[int | signal.Signals], cgroup: ContainerCgroup | None) -> int:
    """Answer the children, wait for the container, kill it when the time is up; its status.

    `mask` is the signal mask to restore once the cleanup below is in place. When there is a `cgroup`,
    the init waits until it is moved there.
    """
    child_fd = os.pidfd_open(child)
    init_fd: int | None = None
    status: int | None = None
    error: str | None = None
    pending = b""
    deadline = None if timeout is None else time.monotonic() + timeout
    killed = False
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([channel.up_read], [], [], wait)[0]:
                if killed:  # the first child did not relay in time: kill it too (the init dies with it)
                    os.kill(child, signal.SIGKILL)
                    deadline = None
                else:
                    _kill(init_fd, child)
                    killed, deadline = True, time.monotonic() + _GRACE
                continue
            chunk = os.read(channel.up_read, 4096)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                kind, _, text = line.decode(errors="replace").partition(" ")
                if kind == "user":
                    if "no-uid-map" not in plan.faults:  # FAULT: when set, the maps are never written
                        try:
                            write_maps(child, plan.spec.linux.uid_mappings, plan.spec.linux.gid_mappings)
                        except OSError as err:
                            raise ContainerError(f"container {container_id}: {describe(err)}") from None
                    with contextlib.suppress(BrokenPipeError):  # the child is gone: its error is on the way
                        os.write(channel.down_write, b"g")
                elif kind == "init":
                    init_fd = _pidfd(int(text))
                    if cgroup is not None and init_fd is not None:
                        _move_in(cgroup, int(text), container_id, plan.faults)
                        with contextlib.suppress(BrokenPipeError):
                            os.write(channel.down_write, b"c")
                elif kind == "exit":
                    status = int(text)
                elif kind == "error":
                    error = text
    except BaseException:
        with held_signals():
            _kill(init_fd, child)
            if not select.select([child_fd], [], [], _GRACE)[0]:
                os.kill(child, signal.SIGKILL)
        raise
    finally:
        with held_signals():
            os.waitpid(child, 0)
            for fd in (child_fd, init_fd, channel.up_read, channel.down_write):
                if fd is not None:
                    os.close(fd)
    if error is not None:
        raise ContainerError(f"container {container_id}: {error}")
    if status is None:
        return 128 + signal.SIGKILL  # the first child was killed before it could relay: so was the init
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _move_in(cgroup: ContainerCgroup, pid: int, container_id: str, faults: frozenset[str]) -> None:
    """Move the init into the container's cgroup, in every hierarchy, before it runs anything of the container."""
    if "not-moved-in" in faults:  # FAULT: the cgroup stays empty, the container in the runtime's cgroup
        return
    try:
        cgroup.add(pid)
    except CgroupError as err:
        raise ContainerError(f"container {container_id}: {err}") from None


def _pidfd(pid: int) -> int | None:
    """A pidfd for the init, so a later kill cannot hit a recycled PID; None if it is gone already."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def _kill(init_fd: int | None, child: int) -> None:
    """SIGKILL the init (its PID namespace goes with it), or, before there is one, the first child."""
    try:
        if init_fd is not None:
            signal.pidfd_send_signal(init_fd, signal.SIGKILL)
        else:
            os.kill(child, signal.SIGKILL)  # an init it forked just now dies with it (PR_SET_PDEATHSIG)
    except ProcessLookupError:
        pass


__all__ = ["FAULTS", "ContainerError", "describe", "run_bundle"]

if __name__ == "__main__":
    from conformance.ref.runtime_cli import main

    raise SystemExit(main())
