#!/usr/bin/env python3
"""A test bed of several hosts on this one machine, each reached over ssh at its own address.

Why: a fleet run (controller mode over ssh, or Ansible fanning `conformance run` out to every host) needs
several hosts, and this project's machines are single VMs that may send traffic nowhere but to loopback
and to network namespaces of their own. So each bed host is a network namespace with its own address on
a private subnet, its own sshd, host name (UTS namespace) and private /tmp, /var/tmp, /run/netns and
/var/lib/conformance-suite (mount namespace). They share this machine's kernel, file system, processes
and cgroups (docs/bed.md). The controller side lives in a namespace of the bed as well, so that the
root namespace never gets an address on the bed's subnet; `--guest` adds the QEMU guest of
tools/guest.py (pure cgroup v2, a kernel of its own), booted inside the controller namespace.

    tools/bed.py up [--hosts 3] [--guest]     # ~1 s for netns hosts; the guest adds its ~32 s boot
    tools/bed.py exec -- ansible-playbook -i /dev/shm/conformance-bed/inventory.yml playbooks/run.yml
    tools/bed.py ssh bed-2 -- hostname
    tools/bed.py inventory [--ssh-config]     # print the inventory (or ssh_config) `up` wrote
    tools/bed.py status
    tools/bed.py down                         # idempotent; also cleans up after a killed `up`

Standard library only, like tools/guest.py. Exit codes: 0 done, 1 the bed operation failed, 2 usage or
a missing prerequisite (root, a tool, a bed that is up already or not up).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as tools/bed.py: make the `tools` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools import commandline
from tools import guest as guest_tool
from tools.bed_access import keys, wait_for_ssh, write_access
from tools.bed_commands import BedError, SetupError, need, say
from tools.bed_guest import GUEST_TOOL, finish_guest, start_guest, stop_guest, stop_process
from tools.bed_network import (
    CTL_ADDRESS,
    CTL_NS,
    NETNS_DIR,
    PREFIX,
    PREFIX_LEN,
    SUBNET,
    SWITCH_NS,
    host_address,
    network,
)
from tools.bed_processes import KILL_GRACE_S, bed_processes, is_alive, kill
from tools.bed_sshd import SSHD_READY_S, SUITE_DIR, host_init, start_sshds
from tools.bed_state import (
    CHECKOUT,
    GUEST_HOST,
    GUEST_NAME,
    GUEST_RUN_DIR,
    RUN_DIR,
    STATE_FORMAT,
    TOOL,
    Bed,
    BedHost,
    host_run_dir,
    load,
    read_state,
    write_state,
)

# What tools/bed.py offered before it was split into the bed_* modules: tests and bench use it.
__all__ = [
    "CHECKOUT", "CTL_ADDRESS", "CTL_NS", "DEFAULT_HOSTS", "GUEST_HOST", "GUEST_NAME", "GUEST_RUN_DIR", "GUEST_TOOL",
    "KILL_GRACE_S", "MAX_HOSTS", "NETNS_DIR", "PREFIX", "PREFIX_LEN", "RUN_DIR", "SSHD_READY_S", "STATE_FORMAT",
    "SUBNET", "SUITE_DIR", "SWITCH_NS", "TOOL", "Bed", "BedError", "BedHost", "SetupError", "bed_processes", "down",
    "leftovers", "load", "main", "status_lines", "up",
]

DEFAULT_HOSTS = 3
MAX_HOSTS = 64


# --- up -----------------------------------------------------------------------------------------------


def _preflight(guest: bool) -> None:
    if os.geteuid() != 0:
        raise SetupError("the bed needs root (network namespaces, mounts, sshd)")
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"), ("nsenter", "util-linux"), ("mount", "mount"),
                          ("sshd", "openssh-server"), ("ssh", "openssh-client"), ("ssh-keygen", "openssh-client")):
        need(tool, package)
    if guest and guest_tool.read_stamp(guest_tool.DEFAULT_CACHE) is None:
        raise SetupError(f"no guest image in {guest_tool.DEFAULT_CACHE}: run tools/guest.py build (as root)")



def up(hosts: int = DEFAULT_HOSTS, *, guest: bool = False, guest_timeout: float = guest_tool.DEFAULT_BOOT_TIMEOUT_S,
       guest_smp: int = guest_tool.DEFAULT_SMP, guest_memory: int = guest_tool.DEFAULT_MEMORY_MIB) -> Bed:
    """Bring up HOSTS network-namespace hosts (and the guest) and wait until each answers ssh.

    What a killed earlier `up` left is removed first; a bed that is up is an error. On failure or
    interrupt everything made so far is removed again.
    """
    if not 1 <= hosts <= MAX_HOSTS:
        raise SetupError(f"--hosts {hosts}: use 1 to {MAX_HOSTS}")
    _preflight(guest)
    state = read_state()
    if state is not None and (state.get("state") == "up" or is_alive(int(state.get("pid", 0)))):
        raise SetupError(f"a bed is up already ({RUN_DIR}): tools/bed.py down")
    if leftovers():
        say("removing what an earlier bed left")
        down()
    started = time.monotonic()
    names = [f"bed-{i}" for i in range(1, hosts + 1)]
    RUN_DIR.mkdir(mode=0o700)
    for name in names:
        host_run_dir(name).mkdir(parents=True)
    state = {"format": STATE_FORMAT, "state": "starting", "pid": os.getpid(), "hosts": [], "created": [],
             "guest": guest}
    if not SUITE_DIR.exists():  # the hosts' private tmpfs needs a mount point; `down` removes it again
        state["created"] = [str(SUITE_DIR)]
    write_state(state)
    booting = None
    try:
        SUITE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir (Debian's path)
        keys(names)
        network(hosts)
        if guest:
            booting = start_guest(guest_timeout, guest_smp, guest_memory)
        pids = start_sshds(names)
        bed_hosts = [BedHost(name, host_address(i), 22, RUN_DIR / "id_ed25519", f"{PREFIX}{i}")
                     for i, name in enumerate(names, start=1)]
        write_access(bed_hosts)
        wait_for_ssh(bed_hosts, SSHD_READY_S)
        netns_s = time.monotonic() - started
        guest_boot_s = None
        if booting is not None:
            guest_host = finish_guest(booting, guest_timeout)
            booting = None
            guest_boot_s = round(time.monotonic() - started, 1)
            bed_hosts.append(guest_host)
            write_access(bed_hosts)
            wait_for_ssh([guest_host], 60)
        up_s = round(time.monotonic() - started, 2)
        state.update(state="up", up_s=up_s, netns_s=round(netns_s, 2), guest_boot_s=guest_boot_s, sshd_pids=pids,
                     hosts=[{"name": h.name, "address": h.address, "port": h.port, "key": str(h.key), "netns": h.netns}
                            for h in bed_hosts])
        write_state(state)
        return Bed(tuple(bed_hosts), RUN_DIR, up_s, guest_boot_s)
    except BaseException:
        if booting is not None:
            stop_process(booting)
        with contextlib.suppress(Exception):
            down()
        raise


# --- down, leftovers, status -------------------------------------------------------------------------


def _root_links() -> list[str]:
    """Network devices named conformance-* in this process's namespace (the bed makes none there)."""
    with contextlib.suppress(OSError):
        return sorted(n for n in os.listdir("/sys/class/net") if n.startswith("conformance-"))
    return []


def _mounts() -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if PREFIX in p or p == str(RUN_DIR)]


def leftovers() -> list[str]:
    """Everything of a bed that exists now; empty after `down`."""
    found = [f"netns {p.name}" for p in sorted(NETNS_DIR.glob(f"{PREFIX}*"))]
    found += [f"process {pid} ({why})" for pid, why in sorted(bed_processes().items())]
    found += [f"mount {m}" for m in _mounts()]
    found += [f"link {n}" for n in _root_links()]
    found += [f"path {p}" for p in [RUN_DIR, *sorted(Path("/var/tmp").glob(f"{PREFIX}*")),
                                    GUEST_RUN_DIR] if p.exists()]
    return found


def down() -> list[str]:
    """Remove the bed: the guest, its processes, namespaces (with their devices), host directories, run dir.

    Idempotent; works from whatever a killed `up` left. Returns what it removed, and raises BedError
    listing what it could not remove.
    """
    if os.geteuid() != 0:
        raise SetupError("tools/bed.py down needs root")
    removed = []
    state = read_state() or {}
    if stop_guest():
        removed.append(f"guest {GUEST_NAME}")
    if pids := bed_processes():
        kill(sorted(pids))
        removed += [f"process {pid}" for pid in sorted(pids)]
    for entry in sorted(NETNS_DIR.glob(f"{PREFIX}*")):
        done = subprocess.run(["ip", "netns", "delete", entry.name], capture_output=True, text=True, timeout=30,
                              check=False)
        if done.returncode != 0:  # a namespace file that is no longer a mount: ip refuses it
            subprocess.run(["umount", "--lazy", str(entry)], capture_output=True, timeout=30, check=False)
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(f"netns {entry.name}")
    for path in sorted(Path("/var/tmp").glob(f"{PREFIX}*")):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(f"path {path}")
    for created in state.get("created", []):
        with contextlib.suppress(OSError):
            Path(created).rmdir()  # only if it is still empty
            removed.append(f"path {created}")
    if RUN_DIR.exists():
        shutil.rmtree(RUN_DIR, ignore_errors=True)
        removed.append(f"path {RUN_DIR}")
    if left := leftovers():
        raise BedError("down left: " + "; ".join(left))
    return removed


def status_lines() -> list[str]:
    """The bed that is up, and anything left of one."""
    bed = load()
    lines = []
    if bed is None:
        state = read_state()
        lines.append("bed: starting (pid {})".format(state["pid"]) if state and is_alive(int(state.get("pid", 0)))
                     else "bed: not up (tools/bed.py up)")
    else:
        state = read_state() or {}
        lines.append(f"bed: {len(bed.hosts)} hosts, up in {bed.up_s} s; run dir {bed.run_dir}")
        lines.append(f"  inventory  {bed.inventory}\n  ssh_config {bed.ssh_config}")
        lines.append(f"  controller {CTL_NS} {CTL_ADDRESS}/{PREFIX_LEN} (tools/bed.py exec -- CMD)")
        sshd = state.get("sshd_pids", {})
        for host in bed.hosts:
            where = host.netns or f"QEMU in {CTL_NS}"
            pid = sshd.get(host.name) if host.netns else guest_tool.guest_qemus().get(GUEST_NAME)
            alive = "running" if pid and is_alive(int(pid)) else "NOT RUNNING"
            lines.append(f"  {host.name:<10} {host.address}:{host.port:<6} {where} (pid {pid}, {alive})")
        return lines
    lines += [f"  left over: {item}" for item in leftovers()]
    if len(lines) > 1:
        lines.append("  (tools/bed.py down removes it)")
    return lines


# --- command line ------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/bed.py", description=(__doc__ or "").split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up_cmd = commands.add_parser("up", help="bring the bed up; prints its inventory and ssh_config paths")
    up_cmd.add_argument("--hosts", type=int, default=DEFAULT_HOSTS, help=f"network-namespace hosts (default "
                        f"{DEFAULT_HOSTS}, at most {MAX_HOSTS})")
    up_cmd.add_argument("--guest", action="store_true", help="also boot the QEMU guest of tools/guest.py (~32 s)")
    up_cmd.add_argument("--guest-timeout", type=float, default=guest_tool.DEFAULT_BOOT_TIMEOUT_S, metavar="S")
    up_cmd.add_argument("--guest-smp", type=int, default=guest_tool.DEFAULT_SMP, metavar="N")
    up_cmd.add_argument("--guest-memory", type=int, default=guest_tool.DEFAULT_MEMORY_MIB, metavar="MiB")
    commands.add_parser("down", help="remove the bed and everything a killed `up` left")
    commands.add_parser("status", help="the bed's hosts, or what is left of one")
    inventory_cmd = commands.add_parser("inventory", help="print the Ansible inventory `up` wrote")
    inventory_cmd.add_argument("--ssh-config", action="store_true", help="print the ssh_config instead")
    exec_cmd = commands.add_parser("exec", help="run a command in the controller namespace (-- CMD...)")
    exec_cmd.add_argument("cmd", nargs=argparse.REMAINDER)
    ssh_cmd = commands.add_parser("ssh", help="run a command on a bed host (NAME -- CMD...)")
    ssh_cmd.add_argument("name")
    ssh_cmd.add_argument("cmd", nargs=argparse.REMAINDER)
    return parser


def _loaded() -> Bed:
    bed = load()
    if bed is None:
        raise SetupError("no bed is up: tools/bed.py up")
    return bed


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_host"] and len(argv) == 2:  # internal: the start of a host's sshd (see start_sshds)
        try:
            host_init(argv[1])
        except BedError as error:
            say(str(error))
            return 1
    args = _parser().parse_args(argv)
    return commandline.run(say, lambda: _command(args))


def _command(args: argparse.Namespace) -> None:
    """One command, by its name; errors end it (commandline.run turns them into exit codes)."""
    if args.command == "up":
        bed = up(args.hosts, guest=args.guest, guest_timeout=args.guest_timeout, guest_smp=args.guest_smp,
                 guest_memory=args.guest_memory)
        names = ", ".join(f"{h.name} {h.address}:{h.port}" for h in bed.hosts)
        say(f"up in {bed.up_s} s: {names}")
        print(f"inventory:  {bed.inventory}\nssh_config: {bed.ssh_config}\n"
              f"try:        tools/bed.py exec -- ssh -F {bed.ssh_config} bed-1 hostname")
    elif args.command == "down":
        started = time.monotonic()
        removed = down()
        say(f"down in {time.monotonic() - started:.2f} s" + (f": removed {len(removed)} things" if removed
                                                               else ": nothing was up"))
    elif args.command == "status":
        print("\n".join(status_lines()))
    elif args.command == "inventory":
        bed = _loaded()
        print((bed.ssh_config if args.ssh_config else bed.inventory).read_text(), end="")
    else:
        bed = _loaded()
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if args.command == "ssh":
            argv_out = bed.exec_argv("ssh", "-F", str(bed.ssh_config), bed.host(args.name).name, "--", *cmd)
        elif not cmd:
            raise SetupError("tools/bed.py exec -- CMD...: no command given")
        else:
            argv_out = bed.exec_argv(*cmd)
        os.environ.update(CONFORMANCE_BED_SSH_CONFIG=str(bed.ssh_config),
                          CONFORMANCE_BED_INVENTORY=str(bed.inventory))
        os.execvp(argv_out[0], argv_out)


if __name__ == "__main__":
    sys.exit(main())
