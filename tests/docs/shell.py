"""One bash process for the whole tour, fed one command at a time, as a reader's terminal would be.

The tour's commands build on each other (`cd`, `export`, a variable set in one step and read in a
later one, a job left running in the background), so they cannot each run in a fresh `bash -c`.
After each command the shell prints a marker line with the command's exit status; what came before
the marker is the command's output, stdout and stderr together as a terminal shows them. Python
programs write unbuffered (PYTHONUNBUFFERED) so that the two streams keep the order a terminal sees.

Every read has a deadline. The shell leads its own process group, so closing the session ends it
and anything it left running (SIGTERM first, so that `conformance ref run` tears its container down).
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class ShellError(RuntimeError):
    """The shell did not answer: a command ran past its timeout or the shell exited."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one command printed, its exit status, and how long it took."""

    output: str
    status: int
    seconds: float


#: The environment the tour runs in, over the caller's: plain output, one locale for `sort` and `ls`.
TOUR_ENV = {"PYTHONUNBUFFERED": "1", "LC_ALL": "C.UTF-8", "TERM": "dumb", "NO_COLOR": "1"}


class Session:
    """A bash process that runs commands one after the other, with state carried between them."""

    def __init__(self, cwd: Path, env: Mapping[str, str] | None = None) -> None:
        environment = {**(os.environ if env is None else env), **TOUR_ENV}
        self._marker = f"__conformance_tour_{secrets.token_hex(6)}__"
        self._process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], cwd=cwd, env=environment, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, command: str, timeout: float) -> Outcome:
        """Run one command (several lines allowed) with stdin from /dev/null; its output and exit status."""
        assert self._process.stdin is not None and self._process.stdout is not None
        # The braces keep `cd` and variables in this shell; the newline before `}` ends a here-document.
        script = f"{{ {command}\n}} </dev/null 2>&1\nprintf '\\n%s %d\\n' '{self._marker}' \"$?\"\n"
        started = time.monotonic()
        try:
            self._process.stdin.write(script.encode())
            self._process.stdin.flush()
        except BrokenPipeError:
            raise ShellError("the shell has exited", "") from None
        data = bytearray()
        end = f"\n{self._marker} ".encode()
        fd = self._process.stdout.fileno()
        while True:
            at = data.find(end)
            if at >= 0 and data.endswith(b"\n"):
                status = int(data[at + len(end):].decode().strip())
                return Outcome(data[:at].decode(errors="replace"), status, time.monotonic() - started)
            left = started + timeout - time.monotonic()
            if left <= 0:
                raise ShellError(f"no answer within {timeout:.0f} s", data.decode(errors="replace"))
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise ShellError(f"the shell exited (status {self._process.wait()})",
                                     data.decode(errors="replace"))
                data += chunk

    def close(self, grace: float = 10.0) -> None:
        """End the shell and everything in its process group: SIGTERM, then SIGKILL after `grace` seconds."""
        process = self._process
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(process.pid):
                process.poll()
                time.sleep(0.05)
            if not _group_alive(process.pid):
                break
        process.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (signal 0 checks without sending)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
