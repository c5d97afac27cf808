"""How the controller namespace reaches the hosts over ssh: keys, known_hosts, ssh_config, the inventory.

`up` writes these files once the hosts exist (again once the guest has booted) and waits until every
host answers through them, so that a bed that is up is one every fleet run can reach.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence

from tools.bed_commands import BedError
from tools.bed_network import host_address
from tools.bed_state import RUN_DIR, Bed, BedHost, host_run_dir


def keys(names: Sequence[str]) -> None:
    """The client key (root's login on every host) and one host key per host, made in parallel."""
    jobs = [(RUN_DIR / "id_ed25519", "conformance-bed-client")]
    jobs += [(host_run_dir(name) / "ssh_host_ed25519_key", f"conformance-{name}") for name in names]
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
        kind, key = (host_run_dir(name) / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        lines.append(f"{name},{host_address(index)} {kind} {key}\n")
    (RUN_DIR / "known_hosts").write_text("".join(lines))


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


def write_access(hosts: Sequence[BedHost]) -> None:
    """Write the ssh_config and the inventory that reach HOSTS into the run dir."""
    (RUN_DIR / "ssh_config").write_text(_ssh_config_text(hosts))
    (RUN_DIR / "inventory.yml").write_text(_inventory_text(hosts))


def wait_for_ssh(hosts: Sequence[BedHost], timeout: float) -> None:
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


