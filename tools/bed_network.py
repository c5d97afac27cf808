"""The bed's network: a namespace per host and one for the controller, on a bridge of their own.

Their addresses exist only inside these namespaces, so this machine's own network never changes.
"""

from __future__ import annotations

from pathlib import Path

from tools.bed_commands import run_command

PREFIX = "conformance-bed-"
NETNS_DIR = Path("/run/netns")
CTL_NS = f"{PREFIX}ctl"
SWITCH_NS = f"{PREFIX}sw"
# 10.231.0.0/24 exists only inside the bed's namespaces: the controller is .1, bed-i is .(10+i).
SUBNET = "10.231.0"
PREFIX_LEN = 24
CTL_ADDRESS = f"{SUBNET}.1"


def _ip(*args: str) -> None:
    run_command(["ip", *args])


def in_netns(ns: str, *argv: str) -> list[str]:
    """ARGV in network namespace NS, and nothing else of it.

    Not `ip netns exec`: it also remounts /sys in a mount namespace of its own, which loses the cgroup
    hierarchies mounted below /sys/fs/cgroup.
    """
    return ["nsenter", f"--net={NETNS_DIR / ns}", "--", *argv]


def host_address(index: int) -> str:
    """The address of bed host INDEX (from 1) on the bed's subnet."""
    return f"{SUBNET}.{10 + index}"


def network(count: int) -> None:
    """The switch namespace with its bridge, and one veth from it to the controller and to each host.

    Each veth is made in the switch namespace with its peer straight in the other namespace: no device
    ever exists in the root namespace, and deleting the namespaces deletes every device.
    """
    hosts = [f"{PREFIX}{i}" for i in range(1, count + 1)]
    for ns in (SWITCH_NS, CTL_NS, *hosts):
        _ip("netns", "add", ns)
    _ip("-n", SWITCH_NS, "link", "add", "br0", "type", "bridge")
    _ip("-n", SWITCH_NS, "link", "set", "br0", "up")
    for port, ns, address in (("ctl", CTL_NS, CTL_ADDRESS),
                              *((f"h{i}", ns, host_address(i)) for i, ns in enumerate(hosts, start=1))):
        _ip("-n", SWITCH_NS, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("-n", SWITCH_NS, "link", "set", port, "master", "br0", "up")
        _ip("-n", ns, "address", "add", f"{address}/{PREFIX_LEN}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")  # the guest's port forward listens on the controller's
