"""Fixtures of the reference-implementation tests: tmpfs scratch space and a sentinel-guarded rootfs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from jail import Jail, make_jail, make_scratch, remove_scratch


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A fresh directory on tmpfs, removed afterwards."""
    path = make_scratch()
    try:
        yield path
    finally:
        remove_scratch(path)


@pytest.fixture
def jail(scratch: Path) -> Jail:
    """A rootfs with a sentinel beside it; `jail.check()` proves nothing outside the rootfs changed."""
    return make_jail(scratch)
