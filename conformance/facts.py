"""Facts on the controller side: gathered once per host per run, through the host's probe.

The probe side (conformance/probe/facts.py) reads the kernel, cgroup layout, overlay parameters and
tool versions; this module asks for them, tells reachable hosts from unreachable ones, and reads
values out of the facts for skips and report headers.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from conformance.hosts import Host, HostError, HostUnreachable
from conformance.scenarios import Scenario
from conformance.selection import host_side_id
from conformance.transport import ProbeClient

T = TypeVar("T")
R = TypeVar("R")

JsonDict = dict[str, Any]


@dataclass(slots=True)
class HostFacts:
    """Every selected host, its probe client, its facts, and why a host could not be reached."""

    clients: dict[str, ProbeClient] = field(default_factory=dict)
    facts: dict[str, JsonDict] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    specs: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # reached, but the probe cannot work there

    @property
    def reachable(self) -> list[str]:
        """Names of the hosts that answered, sorted."""
        return sorted(self.facts)


def at_once(work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """work(item) for every item in threads, the results in the items' order.

    What is done per host is mostly waiting on the host (ssh, its probe), so a fleet's hosts are asked
    together rather than in turn.
    """
    if not items:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(items), 32)) as pool:
        return list(pool.map(work, items))


def gather(hosts: Sequence[Host], short_id: str, timeout: float) -> HostFacts:
    """Ask each host for its facts; a host that fails this is unreachable for the whole run.

    All hosts at once (threads: the work is waiting on ssh): one at a time, a fleet of 8 spent 6 s here
    before its first test. The result keeps the hosts' order, whatever order they answered in.
    """
    found = HostFacts()
    clients = [ProbeClient(host, host_side_id(short_id, host.name), timeout) for host in hosts]
    try:
        answers = at_once(lambda pair: _ask(*pair), list(zip(hosts, clients, strict=True)))
    except BaseException:
        # Ctrl-C or SIGTERM while the hosts were asked: the run never gets to its end-of-run sweep, and the
        # threads finished shipping their probes before the interrupt got here, so take them back now
        at_once(_quietly_clean, clients)
        raise
    for host, (client, facts, unreachable, error) in zip(hosts, answers, strict=True):
        found.specs[host.name] = host.spec
        if unreachable is not None:
            found.unreachable[host.name] = unreachable
        elif error is not None:
            found.errors[host.name] = error
        else:
            found.clients[host.name] = client
            found.facts[host.name] = facts
    return found


def _ask(host: Host, client: ProbeClient) -> tuple[ProbeClient, dict[str, Any], str | None, str | None]:
    """One host's probe client and facts, or why not: (client, facts, unreachable, error)."""
    try:
        observation = client.call([Scenario("facts.gather")], "kernel")[0]
    except HostUnreachable as exc:
        return client, {}, str(exc), None
    except HostError as exc:
        _quietly_remove(client)
        return client, {}, None, str(exc)
    if not observation.ok:
        error = (observation.error or {}).get("error", "unknown error")
        _quietly_remove(client)
        return client, {}, None, f"{host.name}: the probe could not gather facts: {error}"
    return client, dict(observation.data), None, None


def _quietly_remove(client: ProbeClient) -> None:
    with contextlib.suppress(HostError):
        client.remove_bundle()


def _quietly_clean(client: ProbeClient) -> None:
    """Sweep what this run's probe made on the host and remove the probe, as far as the host answers."""
    with contextlib.suppress(HostError):
        client.sweep(client.run_id)
    _quietly_remove(client)


def from_controller(hosts: Sequence[Host], shared: Mapping[str, Any], short_id: str, timeout: float) -> HostFacts:
    """An xdist worker's view: the controller's facts, with clients of the worker's own."""
    found = HostFacts(facts=dict(shared["facts"]), unreachable=dict(shared["unreachable"]),
                      specs=dict(shared["specs"]))
    for host in hosts:
        if host.name in found.facts:
            found.clients[host.name] = ProbeClient(host, host_side_id(short_id, host.name), timeout)
    return found


def lookup(facts: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """A value by dotted path, e.g. lookup(facts, 'cgroup.mode')."""
    node: Any = facts
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def one_line(name: str, facts: Mapping[str, Any]) -> str:
    """A host in one line, for the pytest header and the CLI."""
    distro = lookup(facts, "distro.pretty_name", "unknown distro")
    tools = ", ".join(f"{t} {v['version']}" for t, v in sorted((facts.get("tools") or {}).items())
                      if v.get("present") and v.get("version"))
    return (f"{name}: {distro}, kernel {lookup(facts, 'kernel.release')} {facts.get('arch')}, "
            f"cgroup {lookup(facts, 'cgroup.mode')}, {tools or 'no container tools'}")


#: Named requirements for @pytest.mark.requires(...): name -> (test on facts, skip reason).
REQUIREMENTS: dict[str, tuple[str, Any, str]] = {
    "overlay": ("overlay.listed", True, "the kernel has no overlay filesystem"),
    "userxattr": ("overlay.userxattr", True, "overlay userxattr needs kernel 5.11 or later"),
    "overlay-redirect-dir": ("overlay.redirect_dir", True, "the overlay module has no redirect_dir feature"),
    "overlay-metacopy": ("overlay.metacopy", True, "the overlay module has no metacopy feature (4.19 or later)"),
    "overlay-index": ("overlay.index", True, "the overlay module has no index feature (4.13 or later)"),
    "overlay-data-only": ("overlay.data_only", True, "overlay data-only lower layers need kernel 6.5 or later"),
    "tmpfs-user-xattr": ("overlay.tmpfs_user_xattr", True, "user.* xattrs on tmpfs need kernel 6.6 or later"),
    "cgroup-v2": ("cgroup.mode", "v2", "the host does not run the unified cgroup v2 hierarchy"),
    "seccomp": ("security.seccomp.supported", True, "the kernel has no seccomp"),
    "smp": ("cpus", lambda n: isinstance(n, int) and n >= 2, "the host has one CPU: a cpuset cannot exclude any"),
}


def unmet(requirement: str, facts: Mapping[str, Any]) -> str | None:
    """Why a requirement is not met on a host, or None when it is; tool:NAME asks for a tool."""
    if requirement.startswith("tool:"):
        tool = requirement.removeprefix("tool:")
        present = lookup(facts, f"tools.{tool}.present", False)
        return None if present else f"{tool} is not installed on this host"
    if requirement not in REQUIREMENTS:
        raise KeyError(f"unknown requirement {requirement!r}; known: {', '.join(REQUIREMENTS)}, tool:NAME")
    path, wanted, reason = REQUIREMENTS[requirement]
    value = lookup(facts, path)
    met = wanted(value) if callable(wanted) else value == wanted
    return None if met else f"{reason} ({path} = {value!r})"
