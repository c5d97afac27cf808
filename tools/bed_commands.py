"""How the bed runs the commands it is made of, and how they fail.

Every step of `up` and `down` is an ip, mount, ssh-keygen or sshd command; a failure names the command
and what it said, with the bed's errors (and so the tool's exit codes).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Sequence

from tools import commandline


class BedError(commandline.ToolError):
    """A bed operation failed (exit code 1)."""


class SetupError(BedError, commandline.SetupError):
    """Usage or a missing prerequisite: root, a tool, a bed that is up already or not up (exit code 2)."""


def say(message: str) -> None:
    """Tell the user MESSAGE on stderr."""
    print(f"bed: {message}", file=sys.stderr, flush=True)


def need(tool: str, package: str) -> str:
    """The path of TOOL, or a SetupError naming the Debian PACKAGE that has it."""
    return commandline.need(tool, package, SetupError)


def run_command(argv: Sequence[str], *, timeout: float = 30) -> str:
    """Run a command; return its stdout, or raise with the command, its exit code and stderr."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise BedError(f"{shlex.join(argv)}: still running after {timeout:.0f} s, killed") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[-2000:]
        raise BedError(f"{shlex.join(argv)}: exit code {done.returncode}: {detail}")
    return done.stdout
