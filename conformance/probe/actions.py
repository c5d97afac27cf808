"""The table of what a probe can do: scenario kind -> function.

Kinds are strings like "host.overlay_merge" so that a scenario stays plain JSON data; area modules
register their functions here when they are imported (see ACTION_MODULES).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

from conformance.probe.sandbox import Sandbox

JsonDict = dict[str, Any]


class Context(NamedTuple):
    """What an action gets besides its parameters."""

    sandbox: Sandbox
    implementation: str
    fault: str | None  # the clause ID whose deliberately faulty variant to run, or None

    def faulty(self, clause_id: str) -> bool:
        """Whether this run is the faulty variant that must break clause_id."""
        return self.fault == clause_id


class NotApplicable(Exception):
    """The implementation cannot do what this scenario asks at all (e.g. umoci computes no ChainID).

    Not an error: the test becomes a skip carrying the message as its reason.
    """


Action = Callable[[JsonDict, Context], JsonDict]
_ACTIONS: dict[str, Action] = {}

#: Modules that register actions; imported lazily so a probe only pays for what a batch uses.
ACTION_MODULES: dict[str, str] = {
    "host": "conformance.probe.host_checks",
    "layers": "conformance.probe.layer_checks",
    "overlay": "conformance.probe.overlay_checks",
    "hostile": "conformance.probe.hostile_checks",
    "ns": "conformance.probe.ns_checks",
    "cg": "conformance.probe.cg_checks",
    "facts": "conformance.probe.facts",
    "clean": "conformance.probe.clean",
    "selftest": "conformance.probe.selftest",
}


def action(kind: str) -> Callable[[Action], Action]:
    """Register a function as the handler of a scenario kind."""

    def register(func: Action) -> Action:
        _ACTIONS[kind] = func
        return func

    return register


def lookup(kind: str) -> Action:
    """The handler of a kind, importing its module on first use."""
    if kind not in _ACTIONS:
        module = ACTION_MODULES.get(kind.split(".", 1)[0])
        if module is None:
            raise KeyError(f"unknown scenario kind {kind!r}; known areas: {', '.join(sorted(ACTION_MODULES))}")
        importlib.import_module(module)
    if kind not in _ACTIONS:
        raise KeyError(f"unknown scenario kind {kind!r}")
    return _ACTIONS[kind]
