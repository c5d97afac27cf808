"""A probe client on this machine for the overlay property and regression tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from conformance.hosts import resolve
from conformance.transport import ProbeClient


@pytest.fixture(scope="session")
def local_probe() -> Iterator[ProbeClient]:
    """The probe on localhost (root: the kernel side mounts overlay); removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("the kernel side of the differential tests mounts overlay: run as root")
    [host] = resolve(["local://"])
    client = ProbeClient(host, f"ovlprop{os.getpid()}", 300.0)
    try:
        yield client
    finally:
        client.remove_bundle()
