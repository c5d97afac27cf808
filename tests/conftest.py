"""Shared fixtures of the project's own tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


def conformance_cli() -> list[str]:
    """The console script next to this interpreter, or the module as a fallback."""
    script = Path(sys.executable).with_name("conformance")
    return [str(script)] if script.exists() else [sys.executable, "-m", "conformance"]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `conformance ARGS` and capture its output."""
    return subprocess.run([*conformance_cli(), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or ROOT, check=False, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests keep what a person may want to look at (screenshots, reports)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def needs_root() -> pytest.MarkDecorator:
    """End-to-end tests mount, unshare and write cgroups: they need root."""
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, namespaces, cgroups)")


def which(tool: str) -> str | None:
    """A tool on PATH."""
    return shutil.which(tool)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout, bin/run-tests stopping its background job) ends the run like Ctrl-C.

    pytest then runs the fixtures' finalizers, which stop the QEMU guest and remove what tests made;
    Python's default for SIGTERM would end the process without them.
    """
    signal.signal(signal.SIGTERM, _interrupt)

