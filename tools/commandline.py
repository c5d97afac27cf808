"""What the programs under tools/ share as command lines: exit codes, the check for a needed program.

SIGTERM is taken as Ctrl-C, so that their cleanups (finally blocks) run when a CI job is stopped.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType


class ToolError(Exception):
    """An operation failed (exit code 1)."""


class SetupError(ToolError):
    """Usage or a missing prerequisite: root, a tool, state that is not as the command needs (exit code 2)."""


def need(tool: str, package: str, error: type[Exception] = SetupError) -> str:
    """The path of a program this tool runs, or an error naming the Debian package that has it."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if found is None:
        raise error(f"{tool} is missing: apt-get install {package}")
    return found


def tail(path: Path, lines: int = 30) -> str:
    """The last LINES lines of the log at PATH, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} is missing)"
    return "\n".join(text.splitlines()[-lines:])


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(say: Callable[[str], None], command: Callable[[], None]) -> int:
    """Run one command of a tool: its exit code, with its error said the tool's way instead of a traceback."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        command()
    except SetupError as error:
        say(str(error))
        return 2
    except ToolError as error:
        say(str(error))
        return 1
    except KeyboardInterrupt:
        say("interrupted; cleaned up")
        return 1
    return 0
