"""A container's cgroup: made from linux.cgroupsPath, limited, joined, frozen, read, killed and removed.

This is runc's cgroupfs driver in small (libcontainer/cgroups/fs for v1, fs2 for v2), written to be
read:

- **Where.** An absolute cgroupsPath is taken below each hierarchy's mount point (config-linux.md §
  Cgroups path: "relative to the cgroups mount point"); a relative one below the runtime's own cgroup
  in each hierarchy, except on a v2 host where it goes below the *parent* of the runtime's cgroup, as
  runc's fs2 does ("the current user scope most probably has tasks in it already, making it impossible
  to enable controllers for its sub-cgroup"). `default_path(id)` is what runc uses when the config
  gives none: the container id, relative. (cglayout.cgroup_dirs holds these rules.)
- **Which hierarchies.** On v1 one directory in each hierarchy of memory, pids, cpu, cpuacct, cpuset
  and freezer that the host mounts (cpu and cpuacct may be one hierarchy or two); on hybrid also one in
  the controller-less cgroup2 hierarchy, which only records membership (and offers cgroup.kill); on v2
  one directory, with the controllers the limits need enabled in every ancestor's
  cgroup.subtree_control from the top (cgroup-v2.rst "Top-down Constraint"). memory and pids are
  enabled too where the host offers them, so usage can be read; nothing enabled is disabled again at
  removal (another cgroup may be using it: disabling a controller in a parent silently takes it from
  every child that does not enable it further down). runc and crun do the same.
- **No internal processes** (cgroup-v2.rst): a non-root v2 cgroup with processes cannot enable a
  controller for its children (EBUSY). That happens on hosts without systemd when the runtime runs in
  a nested cgroup namespace (Docker in Docker) or a cgroupsPath sits below a populated cgroup. Only
  then, and only for that ancestor, its processes are moved to a leaf `<ancestor>/init`, as moby's
  dind entrypoint does (moby PR #42331); the move is permanent (listed in `evacuated`), since moving
  them back is refused once the ancestor has controllers enabled for its children.
- **v1 cpuset** starts with empty cpuset.cpus and cpuset.mems, and a process cannot join such a cgroup
  (ENOSPC): each new directory gets its parent's values first (what cgroup.clone_children would do).
- **Limits** are written before any process joins, in cglimits.plan's order.
- **Freeze** (cgfreezer.py): v2 cgroup.freeze then "frozen 1" in cgroup.events; v1 freezer.state
  FROZEN, which passes through FREEZING (runc's freezer: write again until it reads FROZEN). Both
  polled with a deadline.
- **Removal** kills what is left (cgroup.kill where the kernel has it, 5.14+, else SIGKILL to every
  process listed, after a thaw: a v1-frozen task cannot die), waits until the cgroup is empty, and
  removes the directory in every hierarchy, then the ancestors this manager made, if empty. Removing
  twice is fine.

The fault names are the reference runtime's (runtime.FAULTS); each is one `# FAULT` branch.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import signal
import time
from collections.abc import Mapping

from conformance.ref.cgfreezer import Freezer
from conformance.ref.cglayout import (
    UNIFIED,
    V1_JOINED,
    CgroupError,
    Hierarchy,
    Layout,
    cgroup_dirs,
    check_path,
    default_path,
    detect_layout,
)
from conformance.ref.cglimits import NO_LIMITS, Resources, Write, plan
from conformance.ref.cgstats import read_stats

#: v2 controllers enabled where available even when no limit needs them, so usage can be read.
V2_WANTED = ("memory", "pids")
EVACUATION_LEAF = "init"  # the leaf a populated ancestor's processes move to (moby's dind name)
DEADLINE = 10.0  # seconds a freeze, a thaw or an emptying may take (kselftest's cg_wait_for: 10 s)
_POLL = 0.01


class CgroupFiles:
    """The file operations of the manager: the kernel's cgroupfs here, a fake tree in the project's tests.

    Writes never create a file: on cgroupfs a file that does not exist is a controller that is not there.
    """

    def read(self, path: str) -> str:
        """A cgroup file's text."""
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()

    def write(self, path: str, text: str) -> None:
        """One write(2) of `text`: cgroupfs takes a value per write."""
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def mkdir(self, path: str) -> None:
        """A new cgroup."""
        os.mkdir(path, 0o755)

    def rmdir(self, path: str) -> None:
        """Remove an empty cgroup."""
        os.rmdir(path)

    def exists(self, path: str) -> bool:
        """Whether a cgroup or file is there."""
        return os.path.exists(path)


class ContainerCgroup:
    """One container's cgroup in every hierarchy it needs; see the module doc for what each step does."""

    def __init__(self, layout: Layout, path: str, dirs: Mapping[str, str], *, faults: frozenset[str] = frozenset(),
                 files: CgroupFiles | None = None) -> None:
        self.layout = layout
        self.path = path
        self.dirs = dict(dirs)
        self.faults = frozenset(faults)
        self.files = files or CgroupFiles()
        self.created: list[str] = []  # directories this manager made, parents first
        self.enabled: list[tuple[str, str]] = []  # (directory, controller) added to its cgroup.subtree_control
        self.evacuated: list[str] = []  # populated ancestors whose processes were moved to EVACUATION_LEAF

    # Making ------------------------------------------------------------------------------------------

    @classmethod
    def create(cls, layout: Layout, path: str, resources: Resources = NO_LIMITS, *,
               faults: frozenset[str] = frozenset(), own: Mapping[str, str] | None = None,
               files: CgroupFiles | None = None) -> ContainerCgroup:
        """Make the cgroup and write the limits; nothing is left behind when that fails.

        ConfigError for limits no cgroup can take (before anything is made), CgroupError for what the
        host refuses (naming the field and the file).
        """
        writes = plan(resources, layout.limits_version, faults)
        cgroup = cls(layout, path, cgroup_dirs(layout, path, own), faults=faults, files=files)
        try:
            cgroup._make(writes)
            if any(w.file == "memory.limit_in_bytes" for w in writes):  # v1: order memsw by the limit in place
                current = int(cgroup._read("memory", "memory.limit_in_bytes") or -1)
                writes = plan(resources, layout.limits_version, faults, current_memory_limit=current)
            for write in writes:
                cgroup._write(write)
        except BaseException:
            cgroup._unmake()
            raise
        return cgroup

    @classmethod
    def open(cls, layout: Layout | None, path: str, *, faults: frozenset[str] = frozenset(),
             own: Mapping[str, str] | None = None, files: CgroupFiles | None = None) -> ContainerCgroup:
        """The existing cgroup of cgroupsPath `path` (as the runtime that made it resolved it)."""
        layout = layout or detect_layout()
        cgroup = cls(layout, path, cgroup_dirs(layout, path, own), faults=faults, files=files)
        if not cgroup.exists():
            where = ", ".join(cgroup.unique_dirs())
            raise CgroupError(f"cgroup {path}: not found in any hierarchy (looked at {where})")
        return cgroup

    def _make(self, writes: list[Write]) -> None:
        needed = {w.controller for w in writes} - {"cgroup"}
        for controller in sorted(needed):
            if controller not in self.dirs and self.layout.hierarchy_for(controller) is None:
                field = next(w.field for w in writes if w.controller == controller)
                raise CgroupError(f"{field}: this host has no {controller} controller mounted (cgroup v1 "
                                  f"hierarchies: {', '.join(sorted(self.dirs)) or 'none'})")
        for hierarchy in self.layout.hierarchies:
            keys = [UNIFIED] if hierarchy.version == 2 else [c for c in V1_JOINED if c in hierarchy.controllers]
            key = keys[0] if keys else None
            if key is None or key not in self.dirs:
                continue
            made = self._mkdirs(hierarchy.mountpoint, self.dirs[key])
            if hierarchy.version == 1 and "cpuset" in hierarchy.controllers:
                for directory in made:
                    self._inherit_cpuset(directory)
            if hierarchy.version == 2 and self.layout.mode == "v2":
                self._enable(hierarchy, self.dirs[key], needed, writes)
        if self.pids():
            raise CgroupError(f"cgroup {self.path} already has processes (another container's?): "
                              f"{', '.join(map(str, self.pids()))}")
        if self.frozen():
            raise CgroupError(f"cgroup {self.path} is frozen; thaw it or choose another cgroupsPath")

    def _mkdirs(self, top: str, leaf: str) -> list[str]:
        made = []
        current = top
        for part in posixpath.relpath(leaf, top).split("/"):
            current = posixpath.join(current, part)
            if not self.files.exists(current):
                try:
                    self.files.mkdir(current)
                except OSError as err:
                    raise CgroupError(f"cgroup {self.path}: mkdir {current}: {err.strerror}") from None
                self.created.append(current)
                made.append(current)
        return made

    def _inherit_cpuset(self, directory: str) -> None:
        """v1: an empty cpuset cannot take a process (ENOSPC), so start from the parent's cpus and mems."""
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not self.files.read(posixpath.join(directory, name)).strip():
                value = self.files.read(posixpath.join(posixpath.dirname(directory), name)).strip()
                self._put(posixpath.join(directory, name), value, f"copying {name} from the parent")

    def _enable(self, hierarchy: Hierarchy, leaf: str, needed: set[str], writes: list[Write]) -> None:
        """v2: enable the needed controllers (and the wanted ones the host has) from the top to the leaf's parent."""
        available = set(self.files.read(posixpath.join(hierarchy.mountpoint, "cgroup.controllers")).split())
        for controller in sorted(needed - available):
            field = next(w.field for w in writes if w.controller == controller)
            raise CgroupError(f"{field}: the {controller} controller is not available in this cgroup v2 hierarchy "
                              f"(cgroup.controllers at {hierarchy.mountpoint}: {' '.join(sorted(available))})")
        wanted = [c for c in V2_WANTED if c in available and c not in needed]
        current = hierarchy.mountpoint
        for part in posixpath.relpath(leaf, hierarchy.mountpoint).split("/"):
            on = set(self.files.read(posixpath.join(current, "cgroup.subtree_control")).split())
            missing = sorted(needed - on)
            if missing:
                self._subtree_control(current, missing)
            for controller in wanted:
                if controller not in on:
                    with contextlib.suppress(CgroupError):
                        self._subtree_control(current, [controller])
            current = posixpath.join(current, part)

    def _subtree_control(self, directory: str, controllers: list[str]) -> None:
        target = posixpath.join(directory, "cgroup.subtree_control")
        text = " ".join(f"+{c}" for c in controllers)
        try:
            self.files.write(target, text)
        except OSError as err:
            if err.errno != errno.EBUSY or not self._procs(directory):
                raise CgroupError(f"cgroup {self.path}: enabling {text} in {target}: {err.strerror}") from None
            self._evacuate(directory)
            self._put(target, text, f"enabling {text} after moving {directory}'s processes to a leaf")
        self.enabled += [(directory, c) for c in controllers]

    def _evacuate(self, directory: str) -> None:
        """The no-internal-process rule: move a populated ancestor's processes to a leaf of its own."""
        leaf = posixpath.join(directory, EVACUATION_LEAF)
        if not self.files.exists(leaf):
            self.files.mkdir(leaf)
        for pid in self._procs(directory):
            with contextlib.suppress(ProcessLookupError):
                self.files.write(posixpath.join(leaf, "cgroup.procs"), str(pid))
        self.evacuated.append(directory)

    def _unmake(self) -> None:
        """Undo a failed create: the directories made, deepest first (they are empty)."""
        for directory in reversed(self.created):
            with contextlib.suppress(OSError):
                self.files.rmdir(directory)
        self.created.clear()

    # Using -------------------------------------------------------------------------------------------

    def dir_for(self, controller: str) -> str | None:
        """The directory holding `controller`'s files: the v2 one for every controller, else its v1 hierarchy's."""
        if self.layout.mode == "v2" or controller in ("cgroup", UNIFIED):
            return self.dirs.get(UNIFIED)
        return self.dirs.get(controller)

    def unique_dirs(self) -> list[str]:
        """Every directory of the cgroup, once each (cpu and cpuacct may share one)."""
        return list(dict.fromkeys(self.dirs.values()))

    def exists(self) -> bool:
        """Whether any of the cgroup's directories is there."""
        return any(self.files.exists(d) for d in self.unique_dirs())

    def add(self, pid: int) -> None:
        """Move process `pid` (all its threads) into the cgroup, in every hierarchy."""
        for directory in self.unique_dirs():
            self._put(posixpath.join(directory, "cgroup.procs"), str(pid), f"adding process {pid}")

    def pids(self) -> list[int]:
        """The processes in the cgroup, in any of its hierarchies."""
        found: dict[int, None] = {}
        for directory in self.unique_dirs():
            found.update(dict.fromkeys(self._procs(directory)))
        return list(found)

    def stats(self) -> dict[str, int]:
        """Usage and event counters in one vocabulary for v1 and v2 (cgstats.py lists the names and units)."""
        return read_stats(self.dir_for, self.layout.limits_version, self.files)

    def freeze(self, timeout: float = DEADLINE) -> None:
        """Freeze every process of the cgroup; returns once the kernel says the cgroup is frozen (cgfreezer.py)."""
        if "freeze-ignored" in self.faults:  # FAULT: nothing is frozen
            return
        self.freezer().set(True, timeout)

    def thaw(self, timeout: float = DEADLINE) -> None:
        """Undo freeze(); returns once the kernel says the cgroup is thawed."""
        self.freezer().set(False, timeout)

    def frozen(self) -> bool:
        """Whether the kernel reports the cgroup frozen (v1 freezer.state FROZEN, v2 cgroup.events frozen 1)."""
        return self.freezer().frozen()

    def freezer(self) -> Freezer:
        """The cgroup's freezer: the v1 one on v1 and hybrid hosts, cgroup.freeze on v2."""
        return Freezer.of(self.path, self.dirs, self.layout.mode, self.files)

    def kill(self, timeout: float = DEADLINE) -> None:
        """SIGKILL every process in the cgroup and wait until it is empty (a thaw first: frozen v1 tasks cannot die)."""
        if self.frozen():
            self.thaw(timeout)
        kill_file = posixpath.join(self.dirs[UNIFIED], "cgroup.kill") if UNIFIED in self.dirs else None
        deadline = time.monotonic() + timeout
        while True:
            left = [pid for pid in self.pids() if pid != os.getpid()]
            if not left:
                return
            if time.monotonic() > deadline:
                raise CgroupError(f"cgroup {self.path}: processes {left} still there {timeout:g} s after SIGKILL")
            if kill_file is not None and self.files.exists(kill_file) and os.getpid() not in self.pids():
                with contextlib.suppress(OSError):
                    self.files.write(kill_file, "1")  # race-free against forks (cgroup-v2.rst cgroup.kill)
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(_POLL)

    def remove(self, timeout: float = DEADLINE) -> None:
        """Kill what is left, then remove the cgroup in every hierarchy and the ancestors made for it; idempotent."""
        if "stragglers-left" in self.faults:  # FAULT: nothing is killed, the rmdir fails, both are left quietly
            # (nsinit.py's subreaper kills nothing either with this fault)
            for directory in self.unique_dirs():
                with contextlib.suppress(OSError):
                    self.files.rmdir(directory)
            return
        if self.exists():
            self.kill(timeout)
        deadline = time.monotonic() + timeout
        for directory in self.unique_dirs():
            while True:
                try:
                    self.files.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as err:  # EBUSY while the last processes exit
                    if err.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise CgroupError(f"cgroup {self.path}: rmdir {directory}: {err.strerror} "
                                          f"(processes: {self._procs(directory) or 'none'})") from None
                    time.sleep(_POLL)
        for directory in reversed(self.created):
            if directory not in self.dirs.values():
                with contextlib.suppress(OSError):  # another cgroup below it: not ours to remove
                    self.files.rmdir(directory)

    # Files -------------------------------------------------------------------------------------------

    def _write(self, write: Write) -> None:
        directory = self.dir_for(write.controller)
        if directory is None:
            raise CgroupError(f"{write.field}: no {write.controller} hierarchy for {write.file}")
        path = posixpath.join(directory, write.file)
        if write.optional and not self.files.exists(path):
            return  # memory.swap.max without swap: "no swap" and "max" hold anyway (runc does the same)
        self._put(path, write.value, write.field)

    def _put(self, path: str, value: str, why: str) -> None:
        try:
            self.files.write(path, value)
        except OSError as err:
            hint = " (the controller is not enabled or the kernel lacks the file)" if err.errno == errno.ENOENT else ""
            raise CgroupError(f"cgroup {self.path}: {why}: writing {value!r} to {path}: {err.strerror}{hint}") from None

    def _read(self, controller: str, name: str) -> str | None:
        directory = self.dir_for(controller)
        try:
            return None if directory is None else self.files.read(posixpath.join(directory, name)).strip()
        except OSError:
            return None

    def _procs(self, directory: str) -> list[int]:
        try:
            return [int(p) for p in self.files.read(posixpath.join(directory, "cgroup.procs")).split()]
        except OSError:
            return []


__all__ = ["DEADLINE", "CgroupError", "CgroupFiles", "ContainerCgroup", "Layout", "Resources", "cgroup_dirs",
           "check_path", "default_path", "detect_layout"]
