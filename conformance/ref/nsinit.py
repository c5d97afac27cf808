"""The runtime's two child processes: the one that enters the namespaces, and the container's init.

runc splits the same work between nsexec's stages and `runc init`; here it is two forks of the runtime:

- The **first child** joins the namespaces given by path (setns(2), the user namespace first so the
  others can be joined with its privileges, as runc orders them), creates a new user namespace and
  waits on a pipe until the runtime, still root outside, has written its uid_map and gid_map
  (user_namespaces(7): only a process privileged in the parent namespace may map ids it owns),
  becomes root in it, then unshares every other new namespace at once (but the cgroup one when the
  container has a cgroup: see below). unshare(CLONE_NEWPID) and CLONE_NEWTIME move only the children
  (pid_namespaces(7): "the calling process is not moved into the new namespace. The first child
  created by the calling process will have the process ID 1"), so
  it forks once more, tells the runtime the host PID of that **init**, waits for it and relays its
  wait status. Without a new PID namespace it is a child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER):
  whatever the container leaves running is reparented to it and killed when the init exits, which
  the kernel does by itself for a PID namespace (pid_namespaces(7): init's termination "causes all
  of the processes in the namespace to be terminated by a SIGKILL").
- The **init** builds the filesystem view (rootfs.py), applies sysctls, hostname and domainname, the
  process's credentials (credentials.py), and execs process.args with process.env (config.md § POSIX
  process). Any error before execve is reported on the pipe with the step that failed.
- When the container has a cgroup, the init first waits until the runtime has moved it in (the runtime
  is root on the host and can write cgroup.procs; the init may be in a user namespace that cannot), and
  only then creates its cgroup namespace, so the namespace's root is the container's cgroup
  (cgroup_namespaces(7): the root is "the cgroup of the process at the time of the unshare"). Moving the
  init rather than the first child keeps the first child out of the container's pids and memory counts:
  pids.limit N leaves room for N processes of the container's own, and pids.limit 0 still lets the init
  exec (a migration is not a fork; cgroup-v2.rst "PID").

Both die with their parent (PR_SET_PDEATHSIG, SIGKILL), so a runtime killed outright takes the
container with it. Everything they need is imported before the fork: after pivot_root nothing of the
host's file system, Python's library included, can be read.
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from conformance.ref import nsapi
from conformance.ref.credentials import apply_credentials, last_capability
from conformance.ref.idmap import setgroups_allowed
from conformance.ref.procexec import default_signals, execute, set_stdio
from conformance.ref.rootfs import enter_rootfs, finish_rootfs, prepare_rootfs
from conformance.ref.runspec import Spec, sysctl_namespace

_MESSAGE_MAX = 3900  # one write under PIPE_BUF (4096) is atomic: messages never interleave


@dataclass(frozen=True, slots=True)
class Plan:
    """What the children do: the parsed config with the faults applied, and the descriptors they inherit."""

    spec: Spec
    bundle: str
    faults: frozenset[str]
    private: frozenset[str]  # namespace types the container gets of its own, new or joined
    new_flags: int  # CLONE_NEW* to unshare, CLONE_NEWUSER aside
    new_user: bool
    joins: tuple[tuple[int, int], ...]  # (open nsfs descriptor, CLONE_NEW* type), the user namespace first
    stdio: tuple[int | None, int | None, int | None]
    cgroup: bool = False  # the init waits for the runtime to move it into the container's cgroup
    late_cgroupns: bool = False  # then creates the cgroup namespace itself (taken out of new_flags)


class Channel:
    """Lines from the children to the runtime ("user", "init PID", "exit STATUS", "error TEXT"); a byte back.

    The byte back is "g" to the first child once the id maps are written, "c" to the init once it is in
    the container's cgroup; both read the one pipe, at moments that cannot overlap (the init is forked
    after the maps).
    """

    def __init__(self) -> None:
        self.up_read, self.up_write = os.pipe()  # os.pipe() descriptors are close-on-exec
        self.down_read, self.down_write = os.pipe()

    def send(self, kind: str, text: str = "") -> None:
        """One message, in a single write."""
        line = f"{kind} {text}".replace("\n", " ").encode(errors="replace")[:_MESSAGE_MAX] + b"\n"
        os.write(self.up_write, line)

    def child_side(self) -> None:
        """Close the runtime's ends (in the first child)."""
        os.close(self.up_read)
        os.close(self.down_write)

    def parent_side(self) -> None:
        """Close the children's ends (in the runtime, after the fork)."""
        os.close(self.up_write)
        os.close(self.down_read)


def first_child(plan: Plan, channel: Channel, runtime: int) -> NoReturn:
    """Enter the namespaces, fork the init, relay its status; never returns."""
    code = 1
    step = "starting"
    try:
        default_signals()
        signal.pthread_sigmask(signal.SIG_SETMASK, set())  # the runtime held SIGINT and SIGTERM over the fork
        channel.child_side()
        _die_with_runtime(runtime)
        step = "joining namespaces"
        for fd, kind in plan.joins:
            nsapi.setns(fd, kind)
            if kind == nsapi.CLONE_NEWUSER:
                _become_root(runtime)
        if plan.new_user:
            step = "creating the user namespace"
            nsapi.unshare(nsapi.CLONE_NEWUSER)
            channel.send("user")
            if os.read(channel.down_read, 1) != b"g":
                raise OSError(0, "the runtime went away before writing the id maps")
            step = "becoming root in the user namespace (uid 0 and gid 0 must be mapped)"
            _become_root(runtime)
        step = "creating namespaces"
        if plan.new_flags:
            nsapi.unshare(plan.new_flags)
        if plan.new_flags & nsapi.CLONE_NEWTIME and plan.spec.linux.time_offsets:
            with open("/proc/self/timens_offsets", "wb") as offsets:  # before any child exists
                offsets.write("".join(f"{clock} {s} {ns}\n" for clock, s, ns in plan.spec.linux.time_offsets).encode())
        own_pid_ns = bool(plan.new_flags & nsapi.CLONE_NEWPID)
        if not own_pid_ns:
            nsapi.prctl(nsapi.PR_SET_CHILD_SUBREAPER, 1)
        proc = os.open("/proc", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)  # the host's, usable after pivot_root
        alive, alive_write = os.pipe()  # EOF on `alive` tells the init this process is gone
        init = os.fork()
        if init == 0:
            os.close(alive_write)
            container_init(plan, channel, alive)
        os.close(alive)
        channel.send("init", str(init))
        step = "waiting for the container"
        _, status = os.waitpid(init, 0)
        # FAULT (no-pid-namespace, stragglers-left): what the container left keeps running
        if not own_pid_ns and not {"no-pid-namespace", "stragglers-left"} & plan.faults:
            _kill_descendants(proc, os.getpid())
        channel.send("exit", str(status))
        code = 0
    except BaseException as exc:
        channel.send("error", f"{step}: {describe(exc)}")
    finally:
        os._exit(code)


def container_init(plan: Plan, channel: Channel, alive: int) -> NoReturn:
    """Build the container's view of the system and exec its process; never returns.

    `alive` is the read end of a pipe only the first child writes to: its EOF means that child is gone
    (getppid(2) cannot tell: in a new PID namespace the init's parent is outside and reads as 0).
    """
    spec = plan.spec
    step = "starting the init"
    try:
        _die_with_parent(alive)
        if plan.cgroup:
            step = "waiting to be moved into the container's cgroup"
            if os.read(channel.down_read, 1) != b"c":
                raise OSError(0, "the runtime went away before moving the init into the container's cgroup")
        if plan.late_cgroupns:
            step = "creating the cgroup namespace"
            nsapi.unshare(nsapi.CLONE_NEWCGROUP)
        os.setsid()  # a session of its own: the runtime's terminal signals go to the runtime, which kills
        set_stdio(plan.stdio)
        nsapi.cloexec_from(3)
        if spec.process.oom_score_adj is not None:
            step = "setting process.oomScoreAdj"
            with open("/proc/self/oom_score_adj", "wb") as adj:
                adj.write(str(spec.process.oom_score_adj).encode())
        last_cap, groups = last_capability(), setgroups_allowed()  # read from the host's /proc, while it is there
        step = "mounting the root filesystem"
        prepare_rootfs(spec, plan.bundle, plan.faults)
        step = "entering the root filesystem"
        enter_rootfs(spec.root_path, plan.faults)
        for key, value in spec.linux.sysctl:
            if sysctl_namespace(key) in plan.private:  # a shared namespace (a fault) must not change the host
                step = f"setting linux.sysctl {key}"
                with open(f"/proc/sys/{key.replace('.', '/')}", "wb") as handle:  # binary: no codec to load
                    handle.write(value.encode())
        step = "protecting readonlyPaths, maskedPaths and the root"
        finish_rootfs(spec, plan.faults)
        if "uts" in plan.private:
            step = "setting hostname and domainname"
            if spec.hostname is not None:
                nsapi.sethostname(spec.hostname)
            if spec.domainname is not None:
                nsapi.setdomainname(spec.domainname)
        step = "setting process.user, capabilities and rlimits"
        apply_credentials(spec.process, last_cap=last_cap, setgroups_allowed=groups)
        _die_with_parent(alive)  # a change of credentials clears the parent-death signal (prctl(2))
        step = f"changing to process.cwd {spec.process.cwd}"
        os.chdir(spec.process.cwd)
        default_signals(every=True)
    except BaseException as exc:
        channel.send("error", f"{step}: {describe(exc)}")
        os._exit(1)
    execute(spec.process.args, spec.process.env)


def describe(exc: BaseException) -> str:
    """An exception as one line: the OSError's own words (with the path), else the type and message."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {exc}"


def _die_with_runtime(runtime: int) -> None:
    """SIGKILL when the runtime dies; exit now if it already has (the signal would never come)."""
    nsapi.prctl(nsapi.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != runtime:
        os._exit(1)


def _die_with_parent(alive: int) -> None:
    """SIGKILL when the first child dies; exit now if it already has (EOF on its pipe)."""
    nsapi.prctl(nsapi.PR_SET_PDEATHSIG, signal.SIGKILL)
    if select.select([alive], [], [], 0)[0]:
        os._exit(1)


def _become_root(runtime: int) -> None:
    """Become uid and gid 0 in the user namespace just entered, so files it creates get mapped owners."""
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    _die_with_runtime(runtime)


def _kill_descendants(proc: int, me: int) -> None:
    """SIGKILL and reap every child left (orphans of the container are reparented to this subreaper)."""
    while True:
        try:
            with open(f"{me}/task/{me}/children", "rb", opener=_at(proc)) as listing:  # no codec: after pivot_root
                children = [int(pid) for pid in listing.read().split()]
        except OSError:
            children = []
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _at(directory: int) -> Callable[[str, int], int]:
    """An `opener` for open() that resolves relative to a directory descriptor."""
    return lambda path, flags: os.open(path, flags, dir_fd=directory)
