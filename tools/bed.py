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
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

if __package__ in (None, ""):  # run as tools/bed.py: make the `tools` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools import commandline
from tools import guest as guest_tool

PREFIX = "conformance-bed-"
# One bed per machine: fixed names, so that `down` finds everything a killed `up` left.
RUN_DIR = Path("/dev/shm/conformance-bed")
NETNS_DIR = Path("/run/netns")
CTL_NS = f"{PREFIX}ctl"
SWITCH_NS = f"{PREFIX}sw"
# 10.231.0.0/24 exists only inside the bed's namespaces: the controller is .1, bed-i is .(10+i).
SUBNET = "10.231.0"
PREFIX_LEN = 24
CTL_ADDRESS = f"{SUBNET}.1"
DEFAULT_HOSTS = 3
MAX_HOSTS = 64
GUEST_NAME = "bed-guest"  # the name tools/guest.py knows it by
GUEST_HOST = "guest"  # its name in the inventory and the ssh_config
GUEST_RUN_DIR = guest_tool.RUN_ROOT / f"{guest_tool.PREFIX}{GUEST_NAME}"
SUITE_DIR = Path("/var/lib/conformance-suite")
STATE_FORMAT = 1
TOOL = Path(__file__).resolve()
GUEST_TOOL = TOOL.with_name("guest.py")
CHECKOUT = TOOL.parents[1]
SSHD_READY_S = 15.0
KILL_GRACE_S = 3.0


class BedError(commandline.ToolError):
    """A bed operation failed (exit code 1)."""


class SetupError(BedError, commandline.SetupError):
    """Usage or a missing prerequisite: root, a tool, a bed that is up already or not up (exit code 2)."""


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
        return _in_netns(CTL_NS, *argv)

    def ssh_argv(self, name: str, *argv: str) -> list[str]:
        """A command line that runs ARGV on host NAME over ssh from the controller namespace."""
        self.host(name)
        return self.exec_argv("ssh", "-F", str(self.ssh_config), name, "--", shlex.join(argv))


def _say(message: str) -> None:
    print(f"bed: {message}", file=sys.stderr, flush=True)


def _need(tool: str, package: str) -> str:
    return commandline.need(tool, package, SetupError)


def _run(argv: Sequence[str], *, timeout: float = 30) -> str:
    """Run a command; return its stdout, or raise with the command, its exit code and stderr."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise BedError(f"{shlex.join(argv)}: still running after {timeout:.0f} s, killed") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[-2000:]
        raise BedError(f"{shlex.join(argv)}: exit code {done.returncode}: {detail}")
    return done.stdout


def _ip(*args: str) -> None:
    _run(["ip", *args])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} is missing)"


def _in_netns(ns: str, *argv: str) -> list[str]:
    """ARGV in network namespace NS, and nothing else of it.

    Not `ip netns exec`: it also remounts /sys in a mount namespace of its own, which loses the cgroup
    hierarchies mounted below /sys/fs/cgroup.
    """
    return ["nsenter", f"--net={NETNS_DIR / ns}", "--", *argv]


def _host_address(index: int) -> str:
    return f"{SUBNET}.{10 + index}"


def _host_dir(name: str) -> Path:
    return RUN_DIR / "hosts" / name


def _var_tmp(name: str) -> Path:
    """bed-NAME's /var/tmp: a directory on this machine's disk (the suite wants a disk-backed /var/tmp)."""
    return Path("/var/tmp") / f"conformance-{name}"


# --- state ------------------------------------------------------------------------------------------


def _read_state() -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((RUN_DIR / "bed.json").read_text())
    except (OSError, ValueError):
        return None
    return state if state.get("format") == STATE_FORMAT else None


def _write_state(state: dict[str, Any]) -> None:
    part = RUN_DIR / "bed.json.part"
    part.write_text(json.dumps(state, indent=2) + "\n")
    part.replace(RUN_DIR / "bed.json")


def load() -> Bed | None:
    """The bed that is up, or None (none, or one whose `up` has not finished)."""
    state = _read_state()
    if state is None or state.get("state") != "up":
        return None
    hosts = tuple(BedHost(h["name"], h["address"], int(h["port"]), Path(h["key"]), h["netns"]) for h in state["hosts"])
    return Bed(hosts, RUN_DIR, float(state["up_s"]), state.get("guest_boot_s"))


# --- processes ----------------------------------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """Whether PID runs (a zombie does not: it has left its namespaces already)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _ancestors() -> set[int]:
    """The PIDs of this process and its parents: `down` run through `tools/bed.py exec` must not kill itself."""
    found, pid = set(), os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return found


def _namespace_ids() -> dict[tuple[int, int], str]:
    found = {}
    for entry in NETNS_DIR.glob(f"{PREFIX}*"):
        with contextlib.suppress(OSError):
            st = entry.stat()
            found[(st.st_dev, st.st_ino)] = entry.name
    return found


def bed_processes() -> dict[int, str]:
    """The processes of the bed, by PID.

    Those in one of its network namespaces, and those naming its run dir or guest on their command line
    (a daemonized sshd or a QEMU whose namespace file is gone).
    """
    namespaces = _namespace_ids()
    guest_marks = (f"{guest_tool.PREFIX}{GUEST_NAME}", f"{GUEST_RUN_DIR}/")
    mine = _ancestors()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or (pid := int(entry.name)) in mine or not _alive(pid):
            continue
        argv = _cmdline(pid)
        why = None
        with contextlib.suppress(OSError):
            st = (entry / "ns" / "net").stat()
            if (st.st_dev, st.st_ino) in namespaces:
                why = f"in {namespaces[(st.st_dev, st.st_ino)]}"
        line = " ".join(argv)
        if why is None and (str(RUN_DIR) in line or any(mark in line for mark in guest_marks)):
            why = "names the bed"
        if why is not None:
            found[pid] = f"{why}: {line[:160]}"
    return found


def _kill(pids: Sequence[int]) -> None:
    """SIGTERM, then SIGKILL what is still there after KILL_GRACE_S."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [pid for pid in pids if _alive(pid)]
        if not pids:
            return


# --- up -----------------------------------------------------------------------------------------------


def _preflight(guest: bool) -> None:
    if os.geteuid() != 0:
        raise SetupError("the bed needs root (network namespaces, mounts, sshd)")
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"), ("nsenter", "util-linux"), ("mount", "mount"),
                          ("sshd", "openssh-server"), ("ssh", "openssh-client"), ("ssh-keygen", "openssh-client")):
        _need(tool, package)
    if guest and guest_tool._read_stamp(guest_tool.DEFAULT_CACHE) is None:
        raise SetupError(f"no guest image in {guest_tool.DEFAULT_CACHE}: run tools/guest.py build (as root)")


def _keys(names: Sequence[str]) -> None:
    """The client key (root's login on every host) and one host key per host, made in parallel."""
    jobs = [(RUN_DIR / "id_ed25519", "conformance-bed-client")]
    jobs += [(_host_dir(name) / "ssh_host_ed25519_key", f"conformance-{name}") for name in names]
    procs = [subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for path, comment in jobs]
    for (path, _), proc in zip(jobs, procs, strict=True):
        _, err = proc.communicate(timeout=30)
        if proc.returncode != 0:
            raise BedError(f"ssh-keygen {path}: exit code {proc.returncode}: {err.strip()}")
    (RUN_DIR / "authorized_keys").write_text((RUN_DIR / "id_ed25519.pub").read_text())
    lines = []
    for name, index in zip(names, range(1, len(names) + 1), strict=True):
        kind, key = (_host_dir(name) / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        lines.append(f"{name},{_host_address(index)} {kind} {key}\n")
    (RUN_DIR / "known_hosts").write_text("".join(lines))


def _network(count: int) -> None:
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
                              *((f"h{i}", ns, _host_address(i)) for i, ns in enumerate(hosts, start=1))):
        _ip("-n", SWITCH_NS, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("-n", SWITCH_NS, "link", "set", port, "master", "br0", "up")
        _ip("-n", ns, "address", "add", f"{address}/{PREFIX_LEN}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")  # the guest's port forward listens on the controller's


def _sshd_config(name: str, address: str) -> str:
    host_dir = _host_dir(name)
    return (
        f"# bed host {name}, written by tools/bed.py up\n"
        f"ListenAddress {address}:22\nHostKey {host_dir / 'ssh_host_ed25519_key'}\n"
        f"PidFile {host_dir / 'sshd.pid'}\nAuthorizedKeysFile {RUN_DIR / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        # No PAM session stack (pam_env, motd scripts) and no DNS look-ups: no connection pays for them.
        "UsePAM no\nUseDNS no\nStrictModes no\nPrintMotd no\nPrintLastLog no\n"
        # Ansible copies modules and fetches reports with sftp.
        "Subsystem sftp internal-sftp\n"
        # Fleet runs open many sessions at once (xdist workers, Ansible forks).
        "MaxStartups 100:30:200\nMaxSessions 50\n"
    )


def _start_sshds(names: Sequence[str]) -> dict[str, int]:
    """Start every host's sshd in its namespaces; return their PIDs once each listens.

    `nsenter` enters the host's network namespace, `unshare` gives it a UTS and a mount namespace
    (slave: this machine's later mounts show up there, the host's own stay there), and `tools/bed.py
    _host` mounts the host's private directories, sets its host name and becomes sshd, which daemonizes
    and writes its PID file once it listens.
    """
    RUN_DIR.joinpath("empty-bashrc").write_text("# bed hosts: root's commands run without this machine's rc\n")
    launchers = []
    for index, name in enumerate(names, start=1):
        host_dir = _host_dir(name)
        (host_dir / "sshd_config").write_text(_sshd_config(name, _host_address(index)))
        _var_tmp(name).mkdir(mode=0o1777, exist_ok=True)
        _var_tmp(name).chmod(0o1777)
        argv = _in_netns(f"{PREFIX}{index}", "unshare", "--uts", "--mount", "--propagation", "slave", "--",
                         sys.executable, "-S", str(TOOL), "_host", name)
        with (host_dir / "start.log").open("w") as log:
            launchers.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                              start_new_session=True))
    pids = {}
    for name, launcher in zip(names, launchers, strict=True):
        try:
            code = launcher.wait(timeout=30)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()
            code = -1
        if code != 0:
            raise BedError(f"{name}: sshd did not start (exit code {code}):\n{_tail(_host_dir(name) / 'start.log')}\n"
                           f"{_tail(_host_dir(name) / 'sshd.log')}")
    deadline = time.monotonic() + SSHD_READY_S
    for name in names:
        pid_file = _host_dir(name) / "sshd.pid"
        while not (text := pid_file.read_text().strip() if pid_file.exists() else "").isdigit():
            if time.monotonic() > deadline:
                raise BedError(f"{name}: sshd wrote no PID file in {SSHD_READY_S:.0f} s:\n"
                               f"{_tail(_host_dir(name) / 'sshd.log')}")
            time.sleep(0.01)
        pids[name] = int(text)
    return pids


def _remount_sys() -> None:
    """Give the host a sysfs of its own network namespace, with the cgroup hierarchies still below it.

    Its /sys/class/net then shows the host's eth0, as after `ip netns exec`. Each mount directly below
    /sys is bound (with its own submounts) to a staging directory in the host's private /tmp, the old
    /sys is detached (in this mount namespace only: it is a slave), a fresh sysfs mounted, and the staged
    mounts moved back onto it.
    """
    table = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    sys_ids = [fields[0] for fields in table if fields[4] == "/sys"]
    if not sys_ids:
        return
    children = [fields[4] for fields in table if fields[1] == sys_ids[-1] and fields[4].startswith("/sys/")]
    staging = Path("/tmp/.conformance-bed-sys")
    staged = []
    for index, point in enumerate(children):
        target = staging / str(index)
        target.mkdir(parents=True)
        _run(["mount", "--rbind", point, str(target)])
        staged.append((target, point))
    _run(["umount", "--lazy", "/sys"])
    _run(["mount", "-t", "sysfs", "sysfs", "/sys"])
    for target, point in staged:
        _run(["mount", "--move", str(target), point])
    shutil.rmtree(staging)


def _host_init(name: str) -> NoReturn:
    """Inside a host's fresh UTS and mount namespaces: mount its private directories, name it, become sshd.

    Private: /tmp (tmpfs), /var/tmp (its own directory on this machine's disk), /run/netns (so that a
    `conformance clean` there cannot reach the bed's namespace files) and /var/lib/conformance-suite
    (tmpfs; the suite role's venv and reports). Root's .bashrc is hidden: this machine's runs pyenv's init
    on every ssh command (~125 ms each), where a test host has a plain shell, as the guest does.
    """
    # Its parent is `up`, in the machine's mount namespace: refuse to mount over that one's /tmp.
    if os.stat("/proc/self/ns/mnt").st_ino == os.stat(f"/proc/{os.getppid()}/ns/mnt").st_ino:
        raise SetupError("tools/bed.py _host runs only inside the mount namespace `tools/bed.py up` makes")
    mounts = [["-t", "tmpfs", "-o", "mode=1777,size=4g", f"conformance-{name}", "/tmp"],
              ["--bind", str(_var_tmp(name)), "/var/tmp"],
              ["-t", "tmpfs", "-o", "mode=0755,size=16m", f"conformance-{name}", str(NETNS_DIR)],
              ["-t", "tmpfs", "-o", "mode=0755,size=4g", f"conformance-{name}", str(SUITE_DIR)]]
    if Path("/root/.bashrc").exists():
        mounts.append(["--bind", str(RUN_DIR / "empty-bashrc"), "/root/.bashrc"])
    for args in mounts:
        _run(["mount", *args])
    _remount_sys()
    Path("/proc/sys/kernel/hostname").write_text(name)  # this UTS namespace's, not the machine's
    sshd = _need("sshd", "openssh-server")
    host_dir = _host_dir(name)
    os.execv(sshd, [sshd, "-f", str(host_dir / "sshd_config"), "-E", str(host_dir / "sshd.log")])


def _ssh_config_text(hosts: Sequence[BedHost]) -> str:
    known_hosts = RUN_DIR / "known_hosts"
    blocks = ["# Written by tools/bed.py up. Use it from the controller namespace:\n"
              f"#   tools/bed.py exec -- ssh -F {RUN_DIR / 'ssh_config'} bed-1 hostname\n"]
    for host in hosts:
        checking = ("  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n" if host.netns is None else
                    f"  StrictHostKeyChecking yes\n  UserKnownHostsFile {known_hosts}\n")
        blocks.append(f"Host {host.name}\n  HostName {host.address}\n  Port {host.port}\n  IdentityFile {host.key}\n"
                      f"{checking}")
    blocks.append(
        "Host *\n  User root\n  IdentitiesOnly yes\n  KexAlgorithms curve25519-sha256\n  BatchMode yes\n"
        "  ConnectTimeout 10\n  ServerAliveInterval 15\n  ServerAliveCountMax 4\n  LogLevel ERROR\n"
        f"  ControlMaster auto\n  ControlPath {RUN_DIR}/cm-%C\n  ControlPersist 60\n")
    return "".join(blocks)


def _yaml_scalar(value: object) -> str:
    # JSON's strings and numbers are YAML's too; no YAML library here (standard library only).
    return json.dumps(value)


def _inventory_text(hosts: Sequence[BedHost]) -> str:
    known_hosts = RUN_DIR / "known_hosts"
    lines = ["# Written by tools/bed.py up: the bed's hosts, reached from the controller namespace",
             f"# (tools/bed.py exec -- ansible-playbook -i {RUN_DIR / 'inventory.yml'} ...).",
             "all:", "  children:", "    container_hosts:", "      hosts:"]
    for host in hosts:
        lines.append(f"        {host.name}:")
        lines += [f"          {key}: {_yaml_scalar(value)}" for key, value in host.ansible_vars(known_hosts).items()]
    groups = (("bed_netns", [h for h in hosts if h.netns]), ("bed_guests", [h for h in hosts if not h.netns]))
    for group, members in groups:
        lines += [f"    {group}:", "      hosts:" if members else "      hosts: {}"]
        lines += [f"        {host.name}: {{}}" for host in members]
    return "\n".join(lines) + "\n"


def _write_access(hosts: Sequence[BedHost]) -> None:
    (RUN_DIR / "ssh_config").write_text(_ssh_config_text(hosts))
    (RUN_DIR / "inventory.yml").write_text(_inventory_text(hosts))


def _wait_for_ssh(hosts: Sequence[BedHost], timeout: float) -> None:
    """Run `ssh true` from the controller namespace to every host at once, until each answers.

    Without a control master: the first real command starts one.
    """
    pending = list(hosts)
    deadline = time.monotonic() + timeout
    errors: dict[str, str] = {}
    while pending:
        bed = Bed(tuple(hosts), RUN_DIR, 0.0)
        procs = [(h, subprocess.Popen([*bed.exec_argv("ssh", "-F", str(bed.ssh_config), "-o", "ControlMaster=no",
                                                      h.name, "true")],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True)) for h in pending]
        pending = []
        for host, proc in procs:
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if proc.returncode != 0:
                errors[host.name] = err.strip()[-500:]
                pending.append(host)
        if pending and time.monotonic() > deadline:
            raise BedError("no ssh from the controller namespace to " + "; ".join(
                f"{h.name} ({h.address}:{h.port}): {errors[h.name]}" for h in pending))
        if pending:
            time.sleep(0.2)


def _start_guest(timeout: float, smp: int, memory: int) -> subprocess.Popen[bytes]:
    """tools/guest.py boot inside the controller namespace: QEMU's port forward listens on its loopback."""
    log = (RUN_DIR / "guest-boot.log").open("w")
    with log:
        return subprocess.Popen(
            _in_netns(CTL_NS, sys.executable, "-S", str(GUEST_TOOL), "boot", "--name", GUEST_NAME,
                      "--timeout", str(timeout), "--smp", str(smp), "--memory", str(memory)),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


def _finish_guest(booting: subprocess.Popen[bytes], timeout: float) -> BedHost:
    try:
        code = booting.wait(timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        _stop_process(booting)
        code = -1
    if code != 0:
        log = _tail(RUN_DIR / "guest-boot.log")
        raise BedError(f"the guest did not boot (tools/guest.py exit code {code}):\n{log}")
    info = json.loads((GUEST_RUN_DIR / "guest.json").read_text())
    return BedHost(GUEST_HOST, "127.0.0.1", int(info["port"]), guest_tool.DEFAULT_CACHE / guest_tool.KEY, None)


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (tools/guest.py cleans up on it), SIGKILL after 60 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def up(hosts: int = DEFAULT_HOSTS, *, guest: bool = False, guest_timeout: float = guest_tool.DEFAULT_BOOT_TIMEOUT_S,
       guest_smp: int = guest_tool.DEFAULT_SMP, guest_memory: int = guest_tool.DEFAULT_MEMORY_MIB) -> Bed:
    """Bring up HOSTS network-namespace hosts (and the guest) and wait until each answers ssh.

    What a killed earlier `up` left is removed first; a bed that is up is an error. On failure or
    interrupt everything made so far is removed again.
    """
    if not 1 <= hosts <= MAX_HOSTS:
        raise SetupError(f"--hosts {hosts}: use 1 to {MAX_HOSTS}")
    _preflight(guest)
    state = _read_state()
    if state is not None and (state.get("state") == "up" or _alive(int(state.get("pid", 0)))):
        raise SetupError(f"a bed is up already ({RUN_DIR}): tools/bed.py down")
    if leftovers():
        _say("removing what an earlier bed left")
        down()
    started = time.monotonic()
    names = [f"bed-{i}" for i in range(1, hosts + 1)]
    RUN_DIR.mkdir(mode=0o700)
    for name in names:
        _host_dir(name).mkdir(parents=True)
    state = {"format": STATE_FORMAT, "state": "starting", "pid": os.getpid(), "hosts": [], "created": [],
             "guest": guest}
    if not SUITE_DIR.exists():  # the hosts' private tmpfs needs a mount point; `down` removes it again
        state["created"] = [str(SUITE_DIR)]
    _write_state(state)
    booting = None
    try:
        SUITE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir (Debian's path)
        _keys(names)
        _network(hosts)
        if guest:
            booting = _start_guest(guest_timeout, guest_smp, guest_memory)
        pids = _start_sshds(names)
        bed_hosts = [BedHost(name, _host_address(i), 22, RUN_DIR / "id_ed25519", f"{PREFIX}{i}")
                     for i, name in enumerate(names, start=1)]
        _write_access(bed_hosts)
        _wait_for_ssh(bed_hosts, SSHD_READY_S)
        netns_s = time.monotonic() - started
        guest_boot_s = None
        if booting is not None:
            guest_host = _finish_guest(booting, guest_timeout)
            booting = None
            guest_boot_s = round(time.monotonic() - started, 1)
            bed_hosts.append(guest_host)
            _write_access(bed_hosts)
            _wait_for_ssh([guest_host], 60)
        up_s = round(time.monotonic() - started, 2)
        state.update(state="up", up_s=up_s, netns_s=round(netns_s, 2), guest_boot_s=guest_boot_s, sshd_pids=pids,
                     hosts=[{"name": h.name, "address": h.address, "port": h.port, "key": str(h.key), "netns": h.netns}
                            for h in bed_hosts])
        _write_state(state)
        return Bed(tuple(bed_hosts), RUN_DIR, up_s, guest_boot_s)
    except BaseException:
        if booting is not None:
            _stop_process(booting)
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


def _stop_guest() -> bool:
    """Power the bed's guest off from inside the controller namespace, where its ssh port is.

    It is killed when that namespace is gone. Returns whether there was a guest.
    """
    qemu = guest_tool._guest_qemus().get(GUEST_NAME)
    run_dir = GUEST_RUN_DIR
    if qemu is None and not run_dir.exists():
        return False
    if qemu is not None and (NETNS_DIR / CTL_NS).exists():
        with contextlib.suppress(subprocess.TimeoutExpired):
            stop = _in_netns(CTL_NS, sys.executable, "-S", str(GUEST_TOOL), "stop", "--name", GUEST_NAME)
            subprocess.run(stop, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    if (qemu := guest_tool._guest_qemus().get(GUEST_NAME)) is not None:
        _kill([qemu])  # never ssh to it from here: its port is on the controller namespace's loopback
    try:
        guest_tool.stop(GUEST_NAME)  # its run dir and control master
    except guest_tool.GuestError:  # a `guest.py boot` that a killed `up` left is removing the same files
        time.sleep(1)
        guest_tool.stop(GUEST_NAME)
    return True


def down() -> list[str]:
    """Remove the bed: the guest, its processes, namespaces (with their devices), host directories, run dir.

    Idempotent; works from whatever a killed `up` left. Returns what it removed, and raises BedError
    listing what it could not remove.
    """
    if os.geteuid() != 0:
        raise SetupError("tools/bed.py down needs root")
    removed = []
    state = _read_state() or {}
    if _stop_guest():
        removed.append(f"guest {GUEST_NAME}")
    if pids := bed_processes():
        _kill(sorted(pids))
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
        state = _read_state()
        lines.append("bed: starting (pid {})".format(state["pid"]) if state and _alive(int(state.get("pid", 0)))
                     else "bed: not up (tools/bed.py up)")
    else:
        state = _read_state() or {}
        lines.append(f"bed: {len(bed.hosts)} hosts, up in {bed.up_s} s; run dir {bed.run_dir}")
        lines.append(f"  inventory  {bed.inventory}\n  ssh_config {bed.ssh_config}")
        lines.append(f"  controller {CTL_NS} {CTL_ADDRESS}/{PREFIX_LEN} (tools/bed.py exec -- CMD)")
        sshd = state.get("sshd_pids", {})
        for host in bed.hosts:
            where = host.netns or f"QEMU in {CTL_NS}"
            pid = sshd.get(host.name) if host.netns else guest_tool._guest_qemus().get(GUEST_NAME)
            alive = "running" if pid and _alive(int(pid)) else "NOT RUNNING"
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
    if argv[:1] == ["_host"] and len(argv) == 2:  # internal: the start of a host's sshd (see _start_sshds)
        try:
            _host_init(argv[1])
        except BedError as error:
            _say(str(error))
            return 1
    args = _parser().parse_args(argv)
    return commandline.run(_say, lambda: _command(args))


def _command(args: argparse.Namespace) -> None:
    """One command, by its name; errors end it (commandline.run turns them into exit codes)."""
    if args.command == "up":
        bed = up(args.hosts, guest=args.guest, guest_timeout=args.guest_timeout, guest_smp=args.guest_smp,
                 guest_memory=args.guest_memory)
        names = ", ".join(f"{h.name} {h.address}:{h.port}" for h in bed.hosts)
        _say(f"up in {bed.up_s} s: {names}")
        print(f"inventory:  {bed.inventory}\nssh_config: {bed.ssh_config}\n"
              f"try:        tools/bed.py exec -- ssh -F {bed.ssh_config} bed-1 hostname")
    elif args.command == "down":
        started = time.monotonic()
        removed = down()
        _say(f"down in {time.monotonic() - started:.2f} s" + (f": removed {len(removed)} things" if removed
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
