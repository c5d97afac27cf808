"""What a run checks where: run ids, and each host's selection from its inventory variables.

In controller mode (`conformance run --inventory`) a fleet's group_vars choose, per host, the areas,
implementations and level it is judged at; the same variables drive the fan-out playbook, so one
inventory means the same thing either way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from conformance import drivers as registry
from conformance.clauses import AREAS
from conformance.hosts import Inventory
from conformance.verdicts import Level

#: The inventory variables that select, per host, what runs there.
AREAS_VAR = "conformance_areas"
IMPLS_VAR = "conformance_impls"
LEVEL_VAR = "conformance_level"
#: Run ids become directory names (reports/<run id>/) and must match the results schema's run_id.
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: What host-side names (conformance-<short id>-...) may carry: docker wants image names in lower case.
_SHORT_ID = re.compile(r"^[a-z0-9]{1,16}$")


def check_run_id(run_id: str) -> str:
    """``run_id`` if it can name a run folder, else ValueError saying what is allowed."""
    if not RUN_ID.match(run_id) or run_id in {"latest"} or len(run_id) > 128:
        raise ValueError(f"run id {run_id!r}: letters, digits and '._-', starting with a letter or digit, at "
                         "most 128 characters, and not 'latest' (it names the folder reports/<run id>/)")
    return run_id


def short_id_of(run_id: str) -> str:
    """The part of a run id that host-side names carry (``conformance-<short id>-...``).

    Its last ``_`` part when that is short lower-case alphanumerics (``20261206T093000Z_ab12cd34`` ->
    ``ab12cd34``), else a digest of the whole id: docker refuses upper case in image names.
    """
    tail = run_id.rsplit("_", 1)[-1]
    return tail if _SHORT_ID.match(tail) else hashlib.sha256(run_id.encode()).hexdigest()[:8]


def host_side_id(short_id: str, host_name: str) -> str:
    """The id one host's names carry in a run: the run's short id and a tag of the host's name.

    Hosts can share a kernel (the test bed's network-namespace hosts, two inventory names for one
    machine, fan-out runs of several hosts on one machine), and with it the cgroup tree, /run/netns and
    /dev/shm. With the run's id alone, one host's fixed-name cgroup (``conformance-<id>-memory``) would
    be another's, and the sweep that ends one host's run would remove what another host of the same run
    still uses. ``conformance clean --run-id`` matches names by prefix, so the run's id still finds
    every host's.
    """
    return f"{short_id}-{hashlib.sha256(host_name.encode()).hexdigest()[:6]}"


@dataclass(frozen=True, slots=True)
class HostSelection:
    """What one host checks, from its inventory variables; None means "whatever the run selected"."""

    areas: tuple[str, ...] | None
    impls: tuple[str, ...] | None
    level: Level

    def excludes(self, area: str, implementation: str) -> str | None:
        """Why a test of ``area`` on ``implementation`` does not run on this host, or None when it does."""
        if self.areas is not None and area not in self.areas:
            return f"not selected for this host by inventory var {AREAS_VAR}"
        if self.impls is not None and implementation not in self.impls and implementation != "none":
            return f"not selected for this host by inventory var {IMPLS_VAR}"
        return None

    def record(self) -> dict[str, Any]:
        """The ``selection`` of the host's record in results.json."""
        return {"areas": list(self.areas) if self.areas is not None else None,
                "impls": list(self.impls) if self.impls is not None else None,
                "level": str(self.level), "source": "inventory"}


def _names(value: Any, var: str, where: str) -> tuple[str, ...] | None:
    """An inventory variable holding names: a list, or one comma-separated string."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = [item.strip() for item in value]
    else:
        raise pytest.UsageError(f"{where}: {var} must be a list of names or a comma-separated string, "
                                f"not {value!r}")
    return tuple(dict.fromkeys(items))


def host_selections(inventory: Inventory, default_level: Level) -> dict[str, HostSelection]:
    """Each inventory host's selection; unknown areas, implementations or levels are usage errors."""
    known_impls = registry.names()
    selections: dict[str, HostSelection] = {}
    for host in inventory.hosts:
        hostvars: Mapping[str, Any] = inventory.hostvars.get(host, {})
        where = f"inventory {inventory.path}: host {host}"
        areas = _names(hostvars.get(AREAS_VAR), AREAS_VAR, where)
        impls = _names(hostvars.get(IMPLS_VAR), IMPLS_VAR, where)
        unknown = [a for a in areas or () if a not in AREAS]
        if unknown:
            raise pytest.UsageError(f"{where}: {AREAS_VAR} names unknown area(s) {', '.join(unknown)}; "
                                    f"known: {', '.join(AREAS)}")
        unknown = [i for i in impls or () if i not in known_impls]
        if unknown:
            raise pytest.UsageError(f"{where}: {IMPLS_VAR} names unknown implementation(s) {', '.join(unknown)}; "
                                    f"known: {', '.join(known_impls)}")
        level = default_level
        raw_level = hostvars.get(LEVEL_VAR)
        if raw_level is not None:
            try:
                level = Level(str(raw_level).upper())
            except ValueError:
                raise pytest.UsageError(f"{where}: {LEVEL_VAR} must be MUST, SHOULD or MAY, "
                                        f"not {raw_level!r}") from None
        selections[host] = HostSelection(areas, impls, level)
    return selections
