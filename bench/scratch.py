"""The scratch tmpfs the benchmarks work on: the disk is not what they measure."""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType


@contextmanager
def scratch_tmpfs(name: str, size: str) -> Iterator[Path]:
    """A tmpfs at /tmp/conformance-bench-<name>-<random>; unmounted (with what is mounted below it) and
    removed on the way out, also on Ctrl-C and SIGTERM."""
    path = Path(f"/tmp/conformance-bench-{name}-{secrets.token_hex(3)}")
    path.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield path
    finally:
        signal.signal(signal.SIGTERM, previous)
        subprocess.run(["umount", "-R", "-l", str(path)], check=False, capture_output=True)
        shutil.rmtree(path, ignore_errors=True)
