"""The bed as `up` records it in its run dir (bed.json) and `load` reads it back: its hosts and their access.

One bed per machine, under fixed names, so that the record and the names are all `down` and `status`
need, also after a killed `up`.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools import guest as guest_tool
from tools.bed_commands import SetupError
from tools.bed_network import CTL_NS, in_netns

# One bed per machine: fixed names, so that `down` finds everything a killed `up` left.
RUN_DIR = Path("/dev/shm/conformance-bed")
GUEST_NAME = "bed-guest"  # the name tools/guest.py knows it by
GUEST_HOST = "guest"  # its name in the inventory and the ssh_config
GUEST_RUN_DIR = guest_tool.RUN_ROOT / f"{guest_tool.PREFIX}{GUEST_NAME}"
STATE_FORMAT = 1
TOOL = Path(__file__).resolve().with_name("bed.py")  # the entry point; a host's sshd starts as `bed.py _host`
CHECKOUT = TOOL.parents[1]


@dataclass(frozen=True, slots=True)
class BedHost:
    """One host of the bed as the controller namespace reaches it."""

    name: str
    address: str
    port: int
    key: Path
    netns: str | None  # None for the guest, which QEMU's port forward puts on the controller's loopback

    def ansible_vars(self, known_hosts: Path) -> dict[str, Any]:
        """The host's inventory variables: everything Ansible needs to reach it, nothing from group vars."""
        if self.netns is None:  # a throwaway guest whose host key comes with the image
            checking = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
        else:
            checking = f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={known_hosts}"
        found: dict[str, Any] = {
            "ansible_host": self.address, "ansible_port": self.port, "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            # curve25519: the default post-quantum kex costs ~150 ms of client CPU per connection here.
            "ansible_ssh_common_args": f"{checking} -o IdentitiesOnly=yes -o KexAlgorithms=curve25519-sha256",
            "ansible_python_interpreter": "/usr/bin/python3"}
        if self.netns is not None:
            # A netns host has this machine's file system: it runs the checkout's venv, as localhost does in
            # inventory/local.yml, rather than a copy of the suite installed into its tmpfs.
            found.update(conformance_suite_install=False, conformance_suite_venv=str(CHECKOUT / ".venv"))
        return found


@dataclass(frozen=True, slots=True)
class Bed:
    """A bed that is up, as `up` left it and `load` finds it."""

    hosts: tuple[BedHost, ...]
    run_dir: Path
    up_s: float
    guest_boot_s: float | None = None

    @property
    def ssh_config(self) -> Path:
        """For `ssh -F` and `conformance run --ssh-config`, from the controller namespace."""
        return self.run_dir / "ssh_config"

    @property
    def inventory(self) -> Path:
        """The Ansible inventory: group container_hosts, and bed_netns / bed_guests."""
        return self.run_dir / "inventory.yml"

    def host(self, name: str) -> BedHost:
        """The host called NAME."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise SetupError(f"the bed has no host {name!r}; it has {', '.join(h.name for h in self.hosts)}")

    def exec_argv(self, *argv: str) -> list[str]:
        """A command line that runs ARGV in the controller namespace: only its network differs from this machine."""
        return in_netns(CTL_NS, *argv)

    def ssh_argv(self, name: str, *argv: str) -> list[str]:
        """A command line that runs ARGV on host NAME over ssh from the controller namespace."""
        self.host(name)
        return self.exec_argv("ssh", "-F", str(self.ssh_config), name, "--", shlex.join(argv))


def host_run_dir(name: str) -> Path:
    """Host NAME's directory in the run dir: its keys, sshd config, pid file and logs."""
    return RUN_DIR / "hosts" / name


def read_state() -> dict[str, Any] | None:
    """The bed's state record (bed.json), or None when there is none of this format."""
    try:
        state: dict[str, Any] = json.loads((RUN_DIR / "bed.json").read_text())
    except (OSError, ValueError):
        return None
    return state if state.get("format") == STATE_FORMAT else None


def write_state(state: dict[str, Any]) -> None:
    """Replace the bed's state record (bed.json) with STATE, atomically."""
    part = RUN_DIR / "bed.json.part"
    part.write_text(json.dumps(state, indent=2) + "\n")
    part.replace(RUN_DIR / "bed.json")


def load() -> Bed | None:
    """The bed that is up, or None (none, or one whose `up` has not finished)."""
    state = read_state()
    if state is None or state.get("state") != "up":
        return None
    hosts = tuple(BedHost(h["name"], h["address"], int(h["port"]), Path(h["key"]), h["netns"]) for h in state["hosts"])
    return Bed(hosts, RUN_DIR, float(state["up_s"]), state.get("guest_boot_s"))
