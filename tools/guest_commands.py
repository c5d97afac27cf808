"""How the guest tool runs commands on this machine, and how they fail.

debootstrap, mkfs and QEMU are whole process trees that a timeout or Ctrl-C must end, and a killed
debootstrap leaves mounts behind: the image build and the running guests handle both the same way,
with the same errors (and so the same exit codes).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tools import commandline
from tools.commandline import tail


class GuestError(commandline.ToolError):
    """A guest operation failed (exit code 1)."""


class SetupError(GuestError, commandline.SetupError):
    """Usage or a missing prerequisite: a tool, root, the cache (exit code 2)."""


def need(tool: str, package: str) -> str:
    """The path of TOOL, or a SetupError naming the Debian PACKAGE that has it."""
    return commandline.need(tool, package, SetupError)


def say(message: str) -> None:
    """Tell the user MESSAGE on stderr."""
    print(f"guest: {message}", file=sys.stderr, flush=True)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def run_command(argv: Sequence[str], *, timeout: float, log: Path | None = None) -> str:
    """Run a command in a process group of its own; return its stdout, or raise with its exit code and output.

    Its own group, so that a timeout or Ctrl-C ends the whole tree (debootstrap is a shell script whose
    dpkg runs in a chroot), not only the process at the top.
    """
    sink = log.open("a") if log else None
    try:
        with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink or subprocess.PIPE,
                              stderr=subprocess.STDOUT if sink else subprocess.PIPE, text=True,
                              start_new_session=True) as proc:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.communicate()
                raise GuestError(f"{shlex.join(argv)}: still running after {timeout:.0f} s, killed") from None
            except BaseException:
                _kill_group(proc.pid)
                proc.wait()
                raise
    finally:
        if sink:
            sink.close()
    if proc.returncode != 0:
        detail = tail(log) if log else (err or out or "").strip()[-3000:]
        raise GuestError(f"{shlex.join(argv)}: exit code {proc.returncode}\n{detail}")
    return out or ""


def _mounts_under(path: Path) -> list[str]:
    inside = f"{path}/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == str(path) or p.startswith(inside)]


def remove_tree(path: Path) -> None:
    """Remove PATH, unmounting first what is mounted inside it.

    A killed debootstrap leaves proc, sys and dev mounted in its target, and the build mounts its own
    tmpfs; shutil.rmtree would walk into those mounts.
    """
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False, timeout=60)
    if left := _mounts_under(path):
        raise GuestError(f"cannot remove {path}: still mounted there: {', '.join(left)}")
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        raise GuestError(f"cannot remove {path}: remove it by hand")
