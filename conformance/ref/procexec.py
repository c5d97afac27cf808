"""The init's last steps before the container's program runs: its descriptors, its signals, execve.

config.md § POSIX process: `args` "with similar semantics to IEEE Std 1003.1-2008 execvp's argv", `env`
"with the same semantics as IEEE Std 1003.1-2008's environ". Like execvp(3), a program name without a
slash is searched for in the PATH of the process's own environment.
"""

from __future__ import annotations

import os
import signal
from typing import NoReturn

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def set_stdio(fds: tuple[int | None, int | None, int | None]) -> None:
    """Make the given descriptors 0, 1 and 2 (through copies, so one given as 0, 1 or 2 is not overwritten)."""
    copies = [None if fd is None else os.dup(fd) for fd in fds]
    for target, copy in enumerate(copies):
        if copy is not None:
            os.dup2(copy, target)
            os.close(copy)


def default_signals(every: bool = False) -> None:
    """SIGINT and SIGTERM back to their default action; with `every`, all that Python ignores or handles.

    Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across execve (signal(7)),
    so without this a container's `yes | head` would see EPIPE instead of dying of SIGPIPE.
    """
    kinds = signal.valid_signals() if every else {signal.SIGINT, signal.SIGTERM}
    for kind in kinds:
        if kind not in (signal.SIGKILL, signal.SIGSTOP) and signal.getsignal(kind) is not signal.SIG_DFL:
            try:
                signal.signal(kind, signal.SIG_DFL)
            except (OSError, ValueError):
                continue
    if every:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())


def execute(args: tuple[str, ...], env: tuple[str, ...]) -> NoReturn:
    """Exec the program, searching the process's PATH when args[0] has no slash (as execvp(3) does).

    A program that cannot be run is the container's failure, not the runtime's: like a shell, say why on
    the container's stderr and exit 127 (not found) or 126 (found but not executable).
    """
    environ = {key: value for key, _, value in (item.partition("=") for item in env)}
    program = args[0]
    if "/" in program:
        candidates = [program]
    else:
        search = environ.get("PATH", DEFAULT_PATH)
        candidates = [os.path.join(d or ".", program) for d in search.split(":")]
    status, reason = 127, "not found"
    for candidate in candidates:
        try:
            os.execve(candidate, list(args), environ)
        except OSError as err:
            if err.errno != 2:  # ENOENT: try the next directory
                status, reason = 126, err.strerror or str(err)
    try:
        os.write(2, f"conformance ref runtime: exec {program!r}: {reason}\n".encode())
    finally:
        os._exit(status)
