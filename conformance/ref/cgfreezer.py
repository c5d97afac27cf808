"""Freezing a cgroup and waiting until the kernel says it is frozen (or thawed), on v1 or v2.

v2 (cgroup-v2.rst `cgroup.freeze`): write 1 to cgroup.freeze; the freeze is complete when cgroup.events
says `frozen 1`. v1 (freezer-subsystem.rst): write FROZEN to freezer.state; it reads FREEZING until
every task has stopped, and runc writes FROZEN again until it reads FROZEN. Both are polled with a
deadline (kselftest's cg_wait_for: 10 s), and a freeze that does not complete is undone before the error.
On hybrid hosts the v1 freezer is used, as runc does; the cgroup2 hierarchy's cgroup.freeze is the
fallback when no v1 freezer hierarchy is mounted.
"""

from __future__ import annotations

import contextlib
import posixpath
import time
from collections.abc import Mapping
from typing import Protocol

from conformance.ref.cglayout import UNIFIED, CgroupError

_POLL = 0.01


class _Files(Protocol):
    def read(self, path: str) -> str: ...
    def write(self, path: str, text: str) -> None: ...
    def exists(self, path: str) -> bool: ...


class Freezer:
    """The freezer of one cgroup: `state` is freezer.state (v1) or cgroup.events (v2), None when there is none."""

    def __init__(self, name: str, version: int, state: str | None, files: _Files) -> None:
        self.name = name  # the cgroup path, for messages
        self.version = version
        self.state = state
        self.files = files

    @classmethod
    def of(cls, name: str, dirs: Mapping[str, str], mode: str, files: _Files) -> Freezer:
        """The freezer of the cgroup whose directories (controller or "unified" -> dir) are `dirs`."""
        if mode != "v2" and "freezer" in dirs:
            return cls(name, 1, posixpath.join(dirs["freezer"], "freezer.state"), files)
        unified = dirs.get(UNIFIED)
        if unified is None or not files.exists(posixpath.join(unified, "cgroup.freeze")):
            return cls(name, 2, None, files)
        return cls(name, 2, posixpath.join(unified, "cgroup.events"), files)

    def frozen(self) -> bool:
        """Whether the kernel reports the cgroup frozen."""
        if self.state is None or not self.files.exists(self.state):
            return False
        text = self.files.read(self.state)
        if self.version == 1:
            return text.strip() == "FROZEN"
        return any(line.split() == ["frozen", "1"] for line in text.splitlines())

    def set(self, frozen: bool, timeout: float) -> None:
        """Freeze or thaw, and return once the kernel says so; CgroupError after `timeout` seconds."""
        if self.state is None:
            raise CgroupError(f"cgroup {self.name}: no freezer (neither a v1 freezer hierarchy nor cgroup.freeze)")
        if self.version == 1:
            target, value, undo = self.state, ("FROZEN" if frozen else "THAWED"), "THAWED"
        else:
            target, value, undo = posixpath.join(posixpath.dirname(self.state), "cgroup.freeze"), str(int(frozen)), "0"
        deadline = time.monotonic() + timeout
        self._put(target, value)
        while self.frozen() != frozen:
            if time.monotonic() > deadline:
                if frozen:
                    with contextlib.suppress(CgroupError):
                        self._put(target, undo)
                raise CgroupError(f"cgroup {self.name}: not {'frozen' if frozen else 'thawed'} after {timeout:g} s")
            time.sleep(_POLL)
            if self.version == 1 and frozen and self.files.read(self.state).strip() == "FREEZING":
                self._put(target, value)  # runc writes FROZEN again until it sticks

    def _put(self, path: str, value: str) -> None:
        try:
            self.files.write(path, value)
        except OSError as err:
            raise CgroupError(f"cgroup {self.name}: writing {value!r} to {path}: {err.strerror}") from None
