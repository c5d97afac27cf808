"""Fixtures of the explore tests: a tmpfs scratch dir, the demo image, and a layer store that is always cleaned up."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.ref.layout import Layout
from conformance.ref.store import Store
from tests.explore.demo import build_demo

SHM = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A `conformance-explore-*` directory on tmpfs, removed afterwards (mounts under it first)."""
    path = Path(tempfile.mkdtemp(prefix="conformance-explore-", dir=SHM))
    try:
        yield path
    finally:
        for target in sorted(_mounts_under(path), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], check=False)  # last resort: Store.remove failed
        shutil.rmtree(path, ignore_errors=True)


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        return [f.split(" ")[4] for f in info if f.split(" ")[4].startswith(str(path) + "/")]


@contextlib.contextmanager
def store_in(scratch: Path) -> Iterator[Store]:
    """A Store under `scratch` whose mounts and directories are removed however the body ends."""
    store = Store(scratch / "conformance-store")
    try:
        yield store
    finally:
        store.remove()


@pytest.fixture
def scratch() -> Iterator[Path]:
    with scratch_dir() as path:
        yield path


@pytest.fixture
def demo(scratch: Path) -> Layout:
    """The demo image (tests/explore/demo.py) in a layout, tagged `demo`."""
    return build_demo(scratch / "demo")


@pytest.fixture
def store(scratch: Path) -> Iterator[Store]:
    with store_in(scratch) as made:
        yield made


def needs_overlay() -> pytest.MarkDecorator:
    """Unpacking makes 0/0 devices and trusted.* xattrs, and mounting needs CAP_SYS_ADMIN and overlayfs."""
    with open("/proc/filesystems", encoding="utf-8") as found:
        overlay = any(line.split()[-1] == "overlay" for line in found if line.strip())
    reason = "needs root (mknod, trusted.* xattrs, mount)" if os.geteuid() != 0 else "no overlay filesystem"
    return pytest.mark.skipif(os.geteuid() != 0 or not overlay, reason=reason)
