"""Scratch space and child processes for one probe run, undone however the run ends.

Every scenario runs below a tmpfs mounted at /tmp/conformance-<run>-<host>-<random> (<run>-<host>:
the host-side id the controller sends, selection.host_side_id), which is also its working directory:
tmpfs because this kind of host's root filesystem can be 30x slower at creating files, and one mount
because a single lazy unmount then removes everything the scenario made, even after a crash. Cleanup steps run in
reverse order on normal exit, on an exception, and on SIGTERM/SIGINT (the controller's timeout).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from conformance import PREFIX
from conformance.probe import syscalls

JsonDict = dict[str, Any]


class Interrupted(BaseException):
    """Raised in the probe when the controller's timeout or the user stops it, so cleanup still runs."""


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(f"stopped by signal {signum}")


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGINT into an exception that unwinds through every cleanup."""
    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGINT, _raise_interrupted)


class Sandbox:
    """A tmpfs scratch dir plus a stack of cleanup steps."""

    def __init__(self, run_id: str, tmp: str = "/tmp") -> None:
        self.run_id = run_id
        self.root = os.path.join(tmp, f"{PREFIX}{run_id}-{os.urandom(3).hex()}")
        self.source = f"{PREFIX}{run_id}"
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def __enter__(self) -> Sandbox:
        os.mkdir(self.root, 0o700)
        self.defer(f"rmdir {self.root}", self._remove_root)
        syscalls.mount(self.source, self.root, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "mode=0700")
        self.defer(f"umount {self.root}", lambda: syscalls.umount(self.root, syscalls.MNT_DETACH))
        # The scenario runs inside its sandbox: what a tool writes into its working directory goes with the
        # sandbox instead of landing where the run was started (conmon writes a file `oom` there when
        # podman's container is OOM-killed on cgroup v1).
        try:
            previous = os.getcwd()
        except FileNotFoundError:  # started from a directory that is gone
            previous = "/"
        os.chdir(self.root)
        self.defer(f"cd {previous}", lambda: os.chdir(previous))
        return self

    def _remove_root(self) -> None:
        import shutil  # noqa: PLC0415  (imported when needed: every probe start pays for its imports)

        shutil.rmtree(self.root, ignore_errors=True)

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def defer(self, what: str, step: Callable[[], None]) -> None:
        """Register a cleanup step; steps run last-in, first-out."""
        self._undo.append((what, step))

    def close(self) -> list[str]:
        """Run every cleanup step, carrying on past failures; returns what could not be undone."""
        problems: list[str] = []
        # A second Ctrl-C or the controller's SIGTERM must not cut a step in half: hold them until done.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            self._undo_all(problems)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return problems

    def _undo_all(self, problems: list[str]) -> None:
        while self._undo:
            what, step = self._undo.pop()
            try:
                step()
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.EINVAL):
                    problems.append(f"{what}: {exc}")

    def path(self, *parts: str) -> str:
        """A path inside the scratch dir."""
        return os.path.join(self.root, *parts)

    def mount(self, source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
        """Mount and remember to unmount."""
        syscalls.mount(source, target, fstype, flags, data)
        self.defer(f"umount {target}", lambda: syscalls.umount(target, syscalls.MNT_DETACH))

    def write_tree(self, base: str, files: dict[str, str]) -> None:
        """Create files (relative path -> content) under base."""
        for rel, content in files.items():
            full = os.path.join(base, rel)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w", encoding="utf-8") as handle:
                handle.write(content)


def error_dict(exc: BaseException) -> JsonDict:
    """An exception as observation data: the errno name where there is one."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return {"errno": errno.errorcode.get(exc.errno, str(exc.errno)), "error": str(exc)}
    return {"errno": None, "error": f"{type(exc).__name__}: {exc}"}


def in_child(work: Callable[[], JsonDict], timeout: float = 20.0) -> JsonDict:
    """Run work() in a forked child and return what it returned.

    Namespace and seccomp changes are one-way for a process: doing them in a child keeps the probe
    itself (and so the next scenario) on the host's namespaces.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            result = work()
        except BaseException as exc:
            result = {"child_error": error_dict(exc)}
        try:
            os.write(write_fd, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    try:
        while True:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([read_fd], [], [], max(remaining, 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise TimeoutError(f"child {pid} took longer than {timeout}s")
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    if not chunks:
        return {"child_error": {"errno": None, "error": "child exited without an answer"}}
    data: JsonDict = json.loads(b"".join(chunks))
    return data


@contextlib.contextmanager
def held_child() -> Iterator[int]:
    """A child that sleeps until the block ends, for checks that need a live process to move or inspect."""
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            while True:
                time.sleep(3600)
        finally:
            os._exit(0)
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
