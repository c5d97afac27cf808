"""Running guests: boot one on an overlay of the cached image, run commands in it over ssh, stop it, find them.

A guest is its QEMU process (found by its -name) and its run dir on tmpfs, nothing else: so `stop --all`
and `status` also find what a killed run left.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tools.commandline import tail
from tools.guest_commands import GuestError, SetupError, need, remove_tree, run_command
from tools.guest_image import DEFAULT_CACHE, KEY, READY_MARK, RUN_ROOT, read_stamp

PREFIX = "conformance-guest-"
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")
# `systemd.unified_cgroup_hierarchy=1` is Debian 12's default already; it is here so that the guest
# stays pure cgroup v2 whatever the image's systemd defaults to. panic=-1 with QEMU's -no-reboot
# makes a guest that cannot mount its root exit at once, so boot() fails fast with the console.
KERNEL_ARGS = ("root=/dev/vda", "rw", "console=ttyS0", "quiet", "panic=-1", "net.ifnames=0",
               "systemd.unified_cgroup_hierarchy=1")
DEFAULT_SMP = 2
DEFAULT_MEMORY_MIB = 1024
DEFAULT_BOOT_TIMEOUT_S = 300
POWEROFF_TIMEOUT_S = 20
READY_GRACE_S = 150


@dataclass(frozen=True, slots=True)
class Guest:
    """A running guest, as boot() left it and stop() finds it."""

    name: str
    port: int
    pid: int
    run_dir: Path
    ssh_config: Path
    boot_s: float = 0.0

    def ssh_argv(self, *argv: str) -> list[str]:
        """An ssh command line that runs ARGV in the guest (quoted for its shell; `--` so ARGV may start with -)."""
        return ["ssh", "-F", str(self.ssh_config), self.name, "--", shlex.join(argv)]


def check_name(name: str) -> None:
    """Raise SetupError unless NAME is a valid guest name."""
    if not NAME.match(name):
        raise SetupError(f"guest name {name!r}: use 1-32 of a-z, 0-9 and -, starting with a letter or digit")


def guest_run_dir(name: str) -> Path:
    """Guest NAME's run dir: its overlay disk, ssh_config, logs and guest.json."""
    return RUN_ROOT / f"{PREFIX}{name}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def guest_qemus() -> dict[str, int]:
    """The running QEMUs boot() started, by guest name: their -name argument is PREFIX + name."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _cmdline(int(entry.name))
        if not argv or not Path(argv[0]).name.startswith("qemu-system"):
            continue
        for flag, value in itertools.pairwise(argv):
            if flag == "-name" and value.startswith(PREFIX):
                found[value.split(",")[0].removeprefix(PREFIX)] = int(entry.name)
    return found


def _ssh_masters(run_dir: Path) -> list[int]:
    """The ssh control masters whose socket is in RUN_DIR (their title reads `ssh: RUN_DIR/control.sock [mux]`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (argv := _cmdline(int(entry.name))) and argv[0].startswith(f"ssh: {run_dir}/"):
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is gone for our purposes; QEMU daemonizes, so it is not our child to reap.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _ssh_config_text(name: str, port: int, key: Path, run_dir: Path) -> str:
    # curve25519 kex: the default sntrup761 hybrid costs a TCG guest about a second per connection.
    return (
        f"Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {key}\n"
        "  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
        "  KexAlgorithms curve25519-sha256\n  BatchMode yes\n  ConnectTimeout 20\n"
        "  ServerAliveInterval 15\n  ServerAliveCountMax 4\n"
        f"  ControlMaster auto\n  ControlPath {run_dir}/control.sock\n  ControlPersist 60\n"
    )


def _qemu_argv(qemu: str, cache: Path, kernel: Path, run_dir: Path, name: str, port: int, smp: int, memory: int,
               append: Sequence[str]) -> list[str]:
    return [
        qemu, "-name", f"{PREFIX}{name}",
        # thread=multi: one host thread per vCPU (MTTCG); with one vCPU it changes nothing.
        "-accel", "tcg,thread=multi" if smp > 1 else "tcg", "-cpu", "max", "-smp", str(smp), "-m", str(memory),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(cache / "initrd.img"), "-append", " ".join([*KERNEL_ARGS, *append]),
        # cache=unsafe: the overlay is thrown away at stop, so flushes to it buy nothing.
        "-drive", f"file={run_dir / 'disk.qcow2'},format=qcow2,if=virtio,cache=unsafe",
        # restrict=on: no way out of the guest but the forwarded ssh port. romfile=: no iPXE ROM to load.
        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0,romfile=",
        "-serial", f"file:{run_dir / 'serial.log'}",
        "-daemonize", "-pidfile", str(run_dir / "qemu.pid"),
    ]


def _wait_for_ssh(guest: Guest, timeout: float) -> None:
    """Wait for the guest's ready line on its console, then until `ssh true` answers.

    Without the line (an image from another build, a unit that failed) ssh is tried anyway once
    READY_GRACE_S have passed.
    """
    started = time.monotonic()
    serial = guest.run_dir / "serial.log"
    log = guest.run_dir / "ssh-wait.log"
    ready = False
    while True:
        if not _alive(guest.pid):
            raise GuestError(f"guest {guest.name}: QEMU exited while booting; its console:\n{tail(serial)}")
        if not ready:
            with contextlib.suppress(OSError):
                ready = READY_MARK in serial.read_bytes()
        if ready or time.monotonic() - started > READY_GRACE_S:
            # Output to a file, not a pipe: a control master that starts here keeps its stderr open.
            with log.open("a") as sink:
                try:
                    done = subprocess.run(guest.ssh_argv("true"), stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                                          timeout=60, check=False)
                except subprocess.TimeoutExpired:
                    done = None
            if done is not None and done.returncode == 0:
                return
        if time.monotonic() - started > timeout:
            raise GuestError(f"guest {guest.name}: no ssh after {timeout:.0f} s; ssh said:\n{tail(log, 3)}\n"
                             f"its console:\n{tail(serial)}")
        time.sleep(1 if ready else 0.25)


def boot(cache: Path = DEFAULT_CACHE, *, name: str = "default", port: int = 0, smp: int = DEFAULT_SMP,
         memory: int = DEFAULT_MEMORY_MIB, timeout: float = DEFAULT_BOOT_TIMEOUT_S, kernel: str = "auto",
         append: Sequence[str] = ()) -> Guest:
    """Boot a guest on a copy-on-write overlay of the cached image and wait until ssh answers.

    The overlay and everything else of the guest lives in /dev/shm/conformance-guest-NAME/, which stop()
    removes; the cached image stays clean. KERNEL is `vmlinux` (PVH entry, no decompressor),
    `bzimage`, or `auto` (vmlinux where the build could extract one). On failure the guest is stopped.
    """
    check_name(name)
    stamp = read_stamp(cache)
    if stamp is None:
        raise SetupError(f"no guest image in {cache}: run tools/guest.py build (as root)")
    qemu = need("qemu-system-x86_64", "qemu-system-x86")
    qemu_img = need("qemu-img", "qemu-utils")
    need("ssh", "openssh-client")
    if kernel not in ("auto", "vmlinux", "bzimage"):
        raise SetupError(f"kernel {kernel!r}: use auto, vmlinux or bzimage")
    if kernel == "auto":
        kernel = "vmlinux" if stamp["kernel_file"] == "vmlinux" else "bzimage"
    kernel_path = cache / ("vmlinux" if kernel == "vmlinux" else "vmlinuz")
    if not kernel_path.exists():
        raise SetupError(f"{kernel_path} is missing: rebuild with tools/guest.py build --force")
    run_dir = guest_run_dir(name)
    if name in guest_qemus():
        raise SetupError(f"guest {name} is running already: tools/guest.py stop --name {name}")
    if run_dir.exists():
        _cleanup(name)  # what a killed run left
    run_dir.mkdir(mode=0o700)
    started = time.monotonic()
    try:
        port = port or _free_port()
        run_command([qemu_img, "create", "-q", "-f", "qcow2", "-b", str(cache / "disk.img"), "-F", "raw",
                     str(run_dir / "disk.qcow2")], timeout=60)
        config = run_dir / "ssh_config"
        config.write_text(_ssh_config_text(name, port, cache / KEY, run_dir))
        # -daemonize: QEMU returns once the VM runs, or fails here with its reason (a port in use).
        run_command(_qemu_argv(qemu, cache, kernel_path, run_dir, name, port, smp, memory, append), timeout=120)
        guest = Guest(name, port, int((run_dir / "qemu.pid").read_text()), run_dir, config)
        _wait_for_ssh(guest, timeout)
        guest = Guest(name, port, guest.pid, run_dir, config, round(time.monotonic() - started, 1))
        info = {**asdict(guest), "run_dir": str(run_dir), "ssh_config": str(config), "smp": smp, "memory": memory,
                "kernel": kernel}
        (run_dir / "guest.json").write_text(json.dumps(info, indent=2) + "\n")
        return guest
    except BaseException:
        _cleanup(name)
        raise


def run(guest: Guest, *argv: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ARGV in the guest over its control master; raise GuestError on a non-zero exit when CHECK."""
    done = subprocess.run(guest.ssh_argv(*argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise GuestError(f"guest {guest.name}: {shlex.join(argv)}: exit code {done.returncode}\n{done.stderr[-3000:]}")
    return done


def _cleanup(name: str, pid: int | None = None) -> None:
    """Kill NAME's QEMU if it still runs, close its ssh control master, remove its run dir."""
    run_dir = guest_run_dir(name)
    pid = pid or guest_qemus().get(name)
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        if not _wait_exit(pid, 10):
            os.kill(pid, signal.SIGKILL)
            _wait_exit(pid, 10)
    config = run_dir / "ssh_config"
    if config.exists():
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", name], capture_output=True, check=False, timeout=15)
    for master in _ssh_masters(run_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(master, signal.SIGTERM)
    if run_dir.exists():
        remove_tree(run_dir)


def stop(name: str = "default", *, timeout: float = POWEROFF_TIMEOUT_S) -> bool:
    """Power NAME off (`systemctl poweroff`, then kill after TIMEOUT s) and remove its run dir.

    Returns whether there was anything to stop.
    """
    check_name(name)
    run_dir = guest_run_dir(name)
    pid = guest_qemus().get(name)
    if pid is None and not run_dir.exists():
        return False
    config = run_dir / "ssh_config"
    # guest.json is written once ssh answered; a guest still booting (or whose boot() was killed) is
    # simply killed: its disk is a throwaway overlay, and ssh would only wait for a timeout.
    if pid is not None and (run_dir / "guest.json").exists():
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(["ssh", "-F", str(config), name, "--", "systemctl --no-block poweroff"],
                           stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=15)
        _wait_exit(pid, timeout)
    _cleanup(name, pid)
    return True


def stop_all(*, timeout: float = POWEROFF_TIMEOUT_S) -> list[str]:
    """Stop every guest: those with a QEMU running and those whose run dir a killed run left."""
    names = set(guest_qemus())
    names |= {p.name.removeprefix(PREFIX) for p in RUN_ROOT.glob(f"{PREFIX}*") if p.is_dir()}
    stopped = []
    for name in sorted(names):
        if NAME.match(name):
            stop(name, timeout=timeout)
        else:  # not a name boot() gives; still ours by its prefix
            remove_tree(RUN_ROOT / f"{PREFIX}{name}")
        stopped.append(name)
    return stopped


def guests() -> list[Guest]:
    """The guests running now, from their run dirs and the process table."""
    found = []
    for name, pid in sorted(guest_qemus().items()):
        try:
            info = json.loads((guest_run_dir(name) / "guest.json").read_text())
        except (OSError, ValueError):
            info = {"port": 0, "boot_s": 0.0}  # still booting, or its run dir is gone
        found.append(Guest(name, int(info["port"]), pid, guest_run_dir(name), guest_run_dir(name) / "ssh_config",
                           float(info["boot_s"])))
    return found
