"""Implementations under test: one small driver class each, behind one Protocol, found by name.

Like testinfra's backend table, the registry maps names to "module:Class" strings imported on first
use, so a broken or heavy driver costs nothing until it is selected. Third parties add drivers through
the entry-point group `conformance.drivers`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from conformance.transport import ProbeClient

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "conformance.drivers"

#: Built-in drivers, one small class each.
BUILTIN: dict[str, str] = {
    "ref": "conformance.drivers.ref:RefDriver",
    "kernel": "conformance.drivers.kernel:KernelDriver",
    "umoci": "conformance.drivers.umoci:UmociDriver",
    "skopeo": "conformance.drivers.skopeo:SkopeoDriver",
    "docker": "conformance.drivers.docker:DockerDriver",
    "podman": "conformance.drivers.podman:PodmanDriver",
    "fuse-overlayfs": "conformance.drivers.fuse_overlayfs:FuseOverlayfsDriver",
    "runc": "conformance.drivers.runc:RuncDriver",
    "crun": "conformance.drivers.crun:CrunDriver",
}


@dataclass(frozen=True, slots=True)
class Availability:
    """Whether a driver can run on a host, and if not, why (which becomes the skip reason)."""

    ok: bool
    reason: str = ""

    @classmethod
    def yes(cls) -> Availability:
        """Available."""
        return cls(True)

    @classmethod
    def no(cls, reason: str) -> Availability:
        """Not available, with the reason a user can act on."""
        return cls(False, reason)


class Driver(Protocol):
    """What every implementation driver offers."""

    name: ClassVar[str]
    areas: ClassVar[frozenset[str]]
    description: ClassVar[str]

    def available(self, facts: Mapping[str, object]) -> Availability:
        """Whether this implementation can run on a host with these facts."""
        ...

    def version(self, facts: Mapping[str, object]) -> str | None:
        """The implementation's version on that host, or None when it has none or is absent."""
        ...

    def faults(self) -> Mapping[str, str]:
        """Clause ID -> what the deliberately faulty variant for that clause does wrong."""
        ...

    def clean(self, client: ProbeClient) -> list[str]:
        """Remove what this implementation left on a host (containers, images...); returns what it removed."""
        ...


class RegistryError(LookupError):
    """An unknown driver name, or a driver that cannot be imported."""


def _table() -> dict[str, str]:
    table = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in table:
            log.warning("driver %s from %s ignored: the name is taken by a built-in driver", ep.name, ep.value)
            continue
        table[ep.name] = ep.value
    return table


def names() -> list[str]:
    """Every known driver name, built-in first."""
    return list(_table())


def get(name: str) -> Driver:
    """An instance of the named driver."""
    table = _table()
    if name not in table:
        raise RegistryError(f"unknown implementation {name!r}; known: {', '.join(table)}")
    module, _, cls = table[name].partition(":")
    try:
        driver: Driver = getattr(importlib.import_module(module), cls)()
    except Exception as exc:  # a broken third-party driver must not make the whole tool unusable
        raise RegistryError(f"implementation {name!r} ({table[name]}) could not be loaded: {exc}") from exc
    return driver


def load_all(selected: list[str] | None = None) -> dict[str, Driver]:
    """The selected drivers (all when None); broken third-party drivers are logged and left out."""
    found: dict[str, Driver] = {}
    for name in selected or names():
        try:
            found[name] = get(name)
        except RegistryError as exc:
            if selected:
                raise
            log.error("%s", exc)
    return found
