"""A netns host's sshd, and the UTS and mount namespaces that make it a host of its own.

The hosts share this machine's file system, so each gets private copies of what the suite writes (/tmp,
/var/tmp, /run/netns, /var/lib/conformance-suite) and a host name, made inside its namespaces by
`tools/bed.py _host` before it becomes sshd.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from tools.bed_commands import BedError, SetupError, need, run_command
from tools.bed_network import NETNS_DIR, PREFIX, host_address, in_netns
from tools.bed_state import RUN_DIR, TOOL, host_run_dir
from tools.commandline import tail

SUITE_DIR = Path("/var/lib/conformance-suite")
SSHD_READY_S = 15.0


def _var_tmp(name: str) -> Path:
    """bed-NAME's /var/tmp: a directory on this machine's disk (the suite wants a disk-backed /var/tmp)."""
    return Path("/var/tmp") / f"conformance-{name}"


def _sshd_config(name: str, address: str) -> str:
    host_dir = host_run_dir(name)
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


def start_sshds(names: Sequence[str]) -> dict[str, int]:
    """Start every host's sshd in its namespaces; return their PIDs once each listens.

    `nsenter` enters the host's network namespace, `unshare` gives it a UTS and a mount namespace
    (slave: this machine's later mounts show up there, the host's own stay there), and `tools/bed.py
    _host` mounts the host's private directories, sets its host name and becomes sshd, which daemonizes
    and writes its PID file once it listens.
    """
    RUN_DIR.joinpath("empty-bashrc").write_text("# bed hosts: root's commands run without this machine's rc\n")
    launchers = []
    for index, name in enumerate(names, start=1):
        host_dir = host_run_dir(name)
        (host_dir / "sshd_config").write_text(_sshd_config(name, host_address(index)))
        _var_tmp(name).mkdir(mode=0o1777, exist_ok=True)
        _var_tmp(name).chmod(0o1777)
        argv = in_netns(f"{PREFIX}{index}", "unshare", "--uts", "--mount", "--propagation", "slave", "--",
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
            raise BedError(f"{name}: sshd did not start (exit code {code}):\n{tail(host_run_dir(name) / 'start.log')}\n"
                           f"{tail(host_run_dir(name) / 'sshd.log')}")
    deadline = time.monotonic() + SSHD_READY_S
    for name in names:
        pid_file = host_run_dir(name) / "sshd.pid"
        while not (text := pid_file.read_text().strip() if pid_file.exists() else "").isdigit():
            if time.monotonic() > deadline:
                raise BedError(f"{name}: sshd wrote no PID file in {SSHD_READY_S:.0f} s:\n"
                               f"{tail(host_run_dir(name) / 'sshd.log')}")
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
        run_command(["mount", "--rbind", point, str(target)])
        staged.append((target, point))
    run_command(["umount", "--lazy", "/sys"])
    run_command(["mount", "-t", "sysfs", "sysfs", "/sys"])
    for target, point in staged:
        run_command(["mount", "--move", str(target), point])
    shutil.rmtree(staging)


def host_init(name: str) -> NoReturn:
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
        run_command(["mount", *args])
    _remount_sys()
    Path("/proc/sys/kernel/hostname").write_text(name)  # this UTS namespace's, not the machine's
    sshd = need("sshd", "openssh-server")
    host_dir = host_run_dir(name)
    os.execv(sshd, [sshd, "-f", str(host_dir / "sshd_config"), "-E", str(host_dir / "sshd.log")])


