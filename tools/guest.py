#!/usr/bin/env python3
"""Throwaway Debian guests under QEMU (TCG) with a pure cgroup v2 hierarchy, as real test hosts.

Why a guest: the machines this project runs on have hybrid cgroups (their cgroup2 hierarchy has no
memory, pids or cpu controller), so the cgroups area has no real host to run on there. Why TCG: /dev/kvm
on them is PVM, which cannot boot a stock kernel (docs/guest.md); QEMU's software emulation can, at
30-40 s per boot and a CPU some 20-50x slower, with the guest's own kernel, systemd and a unified
hierarchy.

    tools/guest.py build                  # once: debootstrap on tmpfs, ext4 image into the cache
    tools/guest.py boot --name a          # a copy-on-write overlay of the image; waits for ssh
    tools/guest.py ssh a -- cat /sys/fs/cgroup/cgroup.controllers
    tools/guest.py stop --name a          # or --all, which also finds a killed run's guests
    tools/guest.py status

Standard library only, so that it runs before the venv exists. Exit codes: 0 done, 1 the guest
operation failed, 2 usage or a missing prerequisite (a tool, root, the cache).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import itertools
import json
import lzma
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as tools/guest.py: make the `tools` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools import commandline

DEFAULT_CACHE = Path("/var/cache/container-conformance/guest")
# Run dirs and the build's work dir live on tmpfs: the root file system of the machines this runs on
# is about 30x slower than tmpfs at creating files, and the qcow2 overlay takes every guest write.
RUN_ROOT = Path("/dev/shm")
PREFIX = "conformance-guest-"
# Not under PREFIX, so that `stop --all` never touches a build in progress.
BUILD_PREFIX = "conformance-build-guest-"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    # The distribution's minbase plus what makes a booting, reachable test host ...
    "systemd-sysv", "udev", "kmod", "procps", "iproute2", "openssh-server", "python3",
    "linux-image-amd64", "initramfs-tools",
    # ... and what the suite runs there.
    "busybox-static", "runc", "crun",
)
# Bump when build() puts something else into the image: a cache with another stamp is rebuilt.
STAMP_FORMAT = 1
DISK_SIZE = 3 << 30
KEY = "id_ed25519"
HOSTNAME = "conformance-guest"
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

# Units that only cost boot time on a throwaway guest: timers of a long-lived system, gettys nobody
# logs in on, and waiting for a network that is one slirp link.
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "man-db.timer", "systemd-networkd-wait-online.service",
    "getty@tty1.service", "serial-getty@ttyS0.service", "getty-static.service",
    "systemd-network-generator.service", "systemd-pstore.service", "systemd-random-seed.service",
    # The initramfs mounts the root rw with fstab's options; the journal is volatile.
    "systemd-remount-fs.service", "systemd-journal-flush.service", "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount", "systemd-update-utmp.service", "systemd-update-utmp-runlevel.service",
    "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "sys-kernel-config.mount", "sys-fs-fuse-connections.mount",
    # Modules the kernel loads on first use anyway (/dev/fuse, /dev/loop-control), or never needs here.
    "modprobe@configfs.service", "modprobe@dm_mod.service", "modprobe@drm.service", "modprobe@efi_pstore.service",
    "modprobe@fuse.service", "modprobe@loop.service",
)
# systemd rewrites the root's cgroup.subtree_control whenever it realizes -.slice, and drops every
# controller no unit asks for (cg_enable_everywhere writes "-cpuset"). A unit with Delegate=yes directly
# under -.slice asks for all of them, so cpuset stays enabled for the root's children next to the
# memory, pids and cpu that systemd's accounting defaults enable.
DELEGATE_UNIT = """\
[Unit]
Description=Keep every cgroup v2 controller enabled for the root cgroup's children (conformance tests)

[Service]
Type=oneshot
RemainAfterExit=yes
Slice=-.slice
Delegate=yes
ExecStart=/bin/true

[Install]
WantedBy=multi-user.target
"""
# QEMU's user network (slirp) always gives the guest 10.0.2.15/24 behind 10.0.2.2. Setting that with
# ip(8) as soon as systemd starts, on the eth0 the initramfs has already made (virtio_net, and
# net.ifnames=0 so that udev keeps the name), puts sshd on the network some 15 s earlier under TCG than
# systemd-networkd and DHCP: networkd alone takes that long to start there.
NETWORK_UNIT = """\
[Unit]
Description=Address on QEMU's user network (10.0.2.15/24, gateway 10.0.2.2) for the conformance tests
DefaultDependencies=no
Wants=network.target
Before=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/sbin/ip link set eth0 up
ExecStart=/sbin/ip address add 10.0.2.15/24 dev eth0
ExecStart=/sbin/ip route add default via 10.0.2.2 dev eth0

[Install]
WantedBy=multi-user.target
"""
# boot() waits for this line on the serial console before it tries ssh: every ssh attempt makes the
# guest start an sshd, which takes CPU from the boot it is waiting for.
READY_MARK = b"conformance-guest-ready"
READY_UNIT = f"""\
[Unit]
Description=Say on the serial console that sshd listens (tools/guest.py waits for this line)
After=ssh.service

[Service]
Type=oneshot
ExecStart=/bin/echo {READY_MARK.decode()}
StandardOutput=tty
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no

[Install]
WantedBy=multi-user.target
"""
GUEST_FILES = {
    "etc/hostname": f"{HOSTNAME}\n",
    "etc/hosts": f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n::1 localhost ip6-localhost ip6-loopback\n",
    # Every boot gets a fresh overlay of a clean image: nothing for fsck to find (pass 0).
    "etc/fstab": "/dev/vda / ext4 rw,relatime 0 0\n",
    # restrict=on keeps the guest off every network but the ssh port forward: no name server to know.
    "etc/resolv.conf": "",
    "etc/systemd/system/conformance-network.service": NETWORK_UNIT,
    # A new connection costs ~2.5 s under TCG by default, ~0.7 s without PAM's session stack (motd
    # scripts, pam_env, ...) and without sshd re-executing itself for each connection (-r, meant for
    # debugging; nothing here needs the address space randomization it brings).
    "etc/ssh/sshd_config.d/conformance.conf": "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                                              "KbdInteractiveAuthentication no\nUsePAM no\nUseDNS no\n"
                                              "PrintMotd no\nPrintLastLog no\n",
    "etc/default/ssh": "SSHD_OPTS=-r\n",
    "etc/systemd/system/conformance-ready.service": READY_UNIT,
    # Drivers udev would load for QEMU's emulated PC (IDE, floppy, PS/2, speaker, SMBus) and for the
    # CPU's virtualization flags; each costs a second or so of module loading under TCG, for nothing.
    "etc/modprobe.d/conformance.conf": "".join(f"blacklist {m}\n" for m in (
        "kvm", "kvm_amd", "kvm_intel", "floppy", "pcspkr", "psmouse", "serio_raw", "ata_piix", "ata_generic",
        "i2c_piix4", "evdev", "joydev")),
    "etc/systemd/journald.conf.d/conformance.conf": "[Journal]\nStorage=volatile\n",
    "etc/systemd/system/conformance-cgroup-delegate.service": DELEGATE_UNIT,
    # sshd -t before sshd: a second start of sshd, seconds under TCG, for a configuration built here.
    "etc/systemd/system/ssh.service.d/conformance.conf": "[Service]\nExecStartPre=\n",
    "etc/motd": "",
    # Every command the suite sends pays for root's shell start-up: keep it empty.
    "root/.bashrc": "# Empty on purpose: every ssh command of the conformance suite runs this.\n",
    "root/.profile": "# Empty on purpose: every ssh command of the conformance suite runs this.\n",
}
ENABLED_UNITS = ("conformance-network.service", "ssh.service", "conformance-cgroup-delegate.service",
                 "conformance-ready.service")


class GuestError(commandline.ToolError):
    """A guest operation failed (exit code 1)."""


class SetupError(GuestError, commandline.SetupError):
    """Usage or a missing prerequisite: a tool, root, the cache (exit code 2)."""


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


def _need(tool: str, package: str) -> str:
    return commandline.need(tool, package, SetupError)


def _say(message: str) -> None:
    print(f"guest: {message}", file=sys.stderr, flush=True)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _run(argv: Sequence[str], *, timeout: float, log: Path | None = None) -> str:
    """Run a command in a process group of its own; return its stdout, or raise with its exit code and output.

    Its own group, so that a timeout or Ctrl-C ends the whole tree (debootstrap is a shell script whose
    dpkg runs in a chroot), not only the process at the top.
    """
    sink = log.open("a") if log else None
    try:
        with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink or subprocess.PIPE,
                              stderr=subprocess.STDOUT if sink else subprocess.PIPE, text=True,
                              start_new_session=True) as proc:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.communicate()
                raise GuestError(f"{shlex.join(argv)}: still running after {timeout:.0f} s, killed") from None
            except BaseException:
                _kill_group(proc.pid)
                proc.wait()
                raise
    finally:
        if sink:
            sink.close()
    if proc.returncode != 0:
        detail = _tail(log) if log else (err or out or "").strip()[-3000:]
        raise GuestError(f"{shlex.join(argv)}: exit code {proc.returncode}\n{detail}")
    return out or ""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} is missing)"
    return "\n".join(text.splitlines()[-lines:])


def _mounts_under(path: Path) -> list[str]:
    inside = f"{path}/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == str(path) or p.startswith(inside)]


def _remove_tree(path: Path) -> None:
    """Remove PATH, unmounting first what is mounted inside it.

    A killed debootstrap leaves proc, sys and dev mounted in its target, and the build mounts its own
    tmpfs; shutil.rmtree would walk into those mounts.
    """
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False, timeout=60)
    if left := _mounts_under(path):
        raise GuestError(f"cannot remove {path}: still mounted there: {', '.join(left)}")
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        raise GuestError(f"cannot remove {path}: remove it by hand")


# --- build -----------------------------------------------------------------------------------------


def _read_stamp(cache: Path) -> dict[str, Any] | None:
    """The stamp of a complete build, or None. build() writes it last, so it means the rest is there."""
    try:
        stamp: dict[str, Any] = json.loads((cache / "stamp.json").read_text())
    except (OSError, ValueError):
        return None
    files = [cache / "disk.img", cache / KEY, cache / stamp.get("kernel_file", "?"), cache / "initrd.img"]
    return stamp if all(f.exists() for f in files) else None


def _stamp_matches(stamp: dict[str, Any] | None, packages: Sequence[str]) -> bool:
    return (stamp is not None and stamp.get("format") == STAMP_FORMAT and stamp.get("suite") == SUITE
            and stamp.get("packages") == list(packages))


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One build at a time per cache (pytest-xdist workers may all ask for the image at once)."""
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _configure(rootfs: Path, public_key: Path) -> None:
    """Turn the debootstrapped tree into a test host: reachable as root by key, quick to boot."""
    for rel, text in GUEST_FILES.items():
        target = rootfs / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)  # debootstrap's resolv.conf may be a link to the host's
        target.write_text(text)
        target.chmod(0o644)
    ssh_dir = rootfs / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(public_key.read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)
    for unit in MASKED_UNITS:
        link = rootfs / "etc" / "systemd" / "system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    _run(["chroot", str(rootfs), "systemctl", "enable", *ENABLED_UNITS], timeout=120)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / junk).glob("*"):
            if entry.is_file():
                entry.unlink()
    # ConditionNeedsUpdate units (ldconfig, hwdb and journal catalog rebuilds) run whenever /usr is
    # newer than /etc/.updated; every boot starts from this image, so they would run on every boot.
    usr_mtime_ns = (rootfs / "usr").stat().st_mtime_ns
    for where in ("etc", "var"):
        updated = rootfs / where / ".updated"
        updated.write_text(f"TIMESTAMP_NSEC={usr_mtime_ns}\n")
        os.utime(updated, ns=(usr_mtime_ns, usr_mtime_ns))


def _has_pvh_note(elf: bytes) -> bool:
    """Whether an ELF64 kernel has the Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, 18) QEMU needs."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:  # ELFCLASS64
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        header = phoff + index * phentsize
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", elf, header)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, pos)
            if elf[pos + 12:pos + 12 + namesz] == b"Xen\0" and note_type == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _extract_vmlinux(bzimage: Path, out: Path) -> bool:
    """Write the bzImage's payload as a plain ELF vmlinux; False when it is not an xz ELF with a PVH note.

    QEMU starts such an ELF at its PVH entry directly, so the guest skips the kernel's decompressor,
    which is slow under TCG. Debian compresses its kernels with xz (CONFIG_KERNEL_XZ) and builds them
    with CONFIG_PVH=y.
    """
    data = bzimage.read_bytes()
    start = data.find(b"\xfd7zXZ\0")
    if start < 0:
        return False
    try:
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
    except lzma.LZMAError:
        return False
    if not _has_pvh_note(elf):
        return False
    out.write_bytes(elf)
    return True


# What finds the root: the virtio disk and ext4, and the crc32c that ext4 and jbd2 ask the crypto API
# for (a soft dependency, which insmod does not follow); virtio_net so that eth0 is there when
# systemd starts (NETWORK_UNIT).
INITRAMFS_MODULES = ("crc32c_generic", "virtio_pci", "virtio_blk", "ext4", "virtio_net")
INITRAMFS_INIT = """\
#!/bin/busybox sh
# The guest's initramfs, written by tools/guest.py: load the modules that find the root, mount it,
# hand over to systemd. Debian's initramfs-tools spends some 10 s under TCG doing the same with udev.
# Exiting makes the kernel panic; with panic=-1 and QEMU's -no-reboot, QEMU then exits.
export PATH=/bin
busybox mount -t devtmpfs devtmpfs /dev
for module in $(busybox cat /modules); do busybox insmod "$module" || echo "initramfs: insmod $module failed"; done
tries=0
while [ ! -b /dev/vda ] && [ $tries -lt 200 ]; do busybox sleep 0.05; tries=$((tries + 1)); done
busybox mount -t ext4 -o rw /dev/vda /root || exit 1
busybox mount --move /dev /root/dev
exec busybox switch_root /root /sbin/init
"""


def _module_order(modules_dir: Path, wanted: Sequence[str]) -> list[Path]:
    """The module files for WANTED in an order insmod can load them (dependencies first), from modules.dep."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[Path(path).name.split(".")[0].replace("-", "_")] = path
    builtin = {Path(line).name.split(".")[0].replace("-", "_")
               for line in (modules_dir / "modules.builtin").read_text().splitlines()}
    order: list[str] = []

    def visit(path: str) -> None:
        if path not in order:
            for dep in deps.get(path, []):
                visit(dep)
            order.append(path)

    for name in wanted:
        if name in builtin:
            continue
        if name not in by_name:
            raise GuestError(f"module {name} is not in {modules_dir}/modules.dep")
        visit(by_name[name])
    if compressed := [p for p in order if not p.endswith(".ko")]:
        raise GuestError(f"compressed modules, which busybox insmod cannot load: {', '.join(compressed)}")
    return [modules_dir / p for p in order]


def _cpio(entries: Sequence[tuple[str, int, bytes]]) -> bytes:
    """A cpio archive in the kernel's initramfs format (newc): (name, mode, data) each, devices as 5:1."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        rdev = (5, 1) if mode & 0o170000 == 0o020000 else (0, 0)  # only /dev/console is a device here
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(encoded), 0)
        out += b"070701" + "".join(f"{field:08X}" for field in fields).encode() + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def _make_initramfs(rootfs: Path, release: str, out: Path) -> None:
    """Write a busybox initramfs (uncompressed: the kernel unpacks it at once) that mounts /dev/vda."""
    modules = _module_order(rootfs / "lib" / "modules" / release, INITRAMFS_MODULES)
    entries = [("bin", 0o040755, b""), ("dev", 0o040755, b""), ("root", 0o040755, b""), ("m", 0o040755, b""),
               ("dev/console", 0o020600, b""), ("bin/busybox", 0o100755, (rootfs / "bin" / "busybox").read_bytes()),
               ("init", 0o100755, INITRAMFS_INIT.encode()),
               ("modules", 0o100644, "".join(f"/m/{m.name}\n" for m in modules).encode())]
    entries += [(f"m/{m.name}", 0o100644, m.read_bytes()) for m in modules]
    out.write_bytes(_cpio(entries))


def build(cache: Path = DEFAULT_CACHE, *, force: bool = False, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Build the guest image into CACHE unless a build with the same packages is there; return its stamp.

    debootstrap runs in a tmpfs mounted under /dev/shm (a private mount: /dev/shm itself may be nodev
    or noexec), which is removed afterwards, also on failure or Ctrl-C. The cache gets disk.img (raw
    ext4, sparse), the kernel (vmlinuz and, where it can be extracted, vmlinux), initrd.img, a throwaway
    ed25519 key pair whose public half is root's authorized key, build.log and stamp.json.
    """
    packages = sorted({*PACKAGES, *extra})
    if not force and _stamp_matches(stamp := _read_stamp(cache), packages):
        assert stamp is not None
        return stamp
    if os.geteuid() != 0:
        raise SetupError("building the guest needs root (debootstrap, chroot, mount)")
    debootstrap = _need("debootstrap", "debootstrap")
    mkfs = _need("mkfs.ext4", "e2fsprogs")
    keygen = _need("ssh-keygen", "openssh-client")
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache):
        if not force and _stamp_matches(stamp := _read_stamp(cache), packages):
            assert stamp is not None
            return stamp  # another process built it while this one waited
        (cache / "stamp.json").unlink(missing_ok=True)  # an interrupted build must not look complete
        log = cache / "build.log"
        log.write_text("")
        os.umask(0o022)
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=RUN_ROOT))
        try:
            _run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=8g", "conformance-build", str(work)], timeout=30)
            rootfs = work / "rootfs"
            _say(f"debootstrap {SUITE} into {rootfs} (a few minutes; log: {log})")
            _run([debootstrap, "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(rootfs), MIRROR],
                 timeout=3600, log=log)
            bootstrapped = time.monotonic()
            if not (cache / KEY).exists():
                _run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", HOSTNAME, "-f", str(cache / KEY)], timeout=30)
            _say("configuring the guest")
            _configure(rootfs, cache / f"{KEY}.pub")
            [bzimage] = sorted((rootfs / "boot").glob("vmlinuz-*"))
            release = bzimage.name.removeprefix("vmlinuz-")
            shutil.copyfile(bzimage, cache / "vmlinuz")
            _make_initramfs(rootfs, release, cache / "initrd.img")
            kernel_file = "vmlinux" if _extract_vmlinux(bzimage, cache / "vmlinux") else "vmlinuz"
            configured = time.monotonic()
            _say("writing the disk image")
            image = cache / "disk.img.part"
            image.unlink(missing_ok=True)
            with image.open("wb") as disk:
                disk.truncate(DISK_SIZE)
            _run([mkfs, "-q", "-F", "-L", "conformance-root", "-d", str(rootfs), str(image)], timeout=900, log=log)
            image.replace(cache / "disk.img")
            finished = time.monotonic()
        finally:
            _remove_tree(work)
        stamp = {
            "format": STAMP_FORMAT, "suite": SUITE, "mirror": MIRROR, "packages": packages,
            "kernel_release": release, "kernel_file": kernel_file,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": {"debootstrap": round(bootstrapped - started, 1),
                        "configure": round(configured - bootstrapped, 1),
                        "mkfs": round(finished - configured, 1), "total": round(finished - started, 1)},
        }
        (cache / "stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
        return stamp


# --- boot, stop, status ----------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise SetupError(f"guest name {name!r}: use 1-32 of a-z, 0-9 and -, starting with a letter or digit")


def _run_dir(name: str) -> Path:
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


def _guest_qemus() -> dict[str, int]:
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
            raise GuestError(f"guest {guest.name}: QEMU exited while booting; its console:\n{_tail(serial)}")
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
            raise GuestError(f"guest {guest.name}: no ssh after {timeout:.0f} s; ssh said:\n{_tail(log, 3)}\n"
                             f"its console:\n{_tail(serial)}")
        time.sleep(1 if ready else 0.25)


def boot(cache: Path = DEFAULT_CACHE, *, name: str = "default", port: int = 0, smp: int = DEFAULT_SMP,
         memory: int = DEFAULT_MEMORY_MIB, timeout: float = DEFAULT_BOOT_TIMEOUT_S, kernel: str = "auto",
         append: Sequence[str] = ()) -> Guest:
    """Boot a guest on a copy-on-write overlay of the cached image and wait until ssh answers.

    The overlay and everything else of the guest lives in /dev/shm/conformance-guest-NAME/, which stop()
    removes; the cached image stays clean. KERNEL is `vmlinux` (PVH entry, no decompressor),
    `bzimage`, or `auto` (vmlinux where the build could extract one). On failure the guest is stopped.
    """
    _check_name(name)
    stamp = _read_stamp(cache)
    if stamp is None:
        raise SetupError(f"no guest image in {cache}: run tools/guest.py build (as root)")
    qemu = _need("qemu-system-x86_64", "qemu-system-x86")
    qemu_img = _need("qemu-img", "qemu-utils")
    _need("ssh", "openssh-client")
    if kernel not in ("auto", "vmlinux", "bzimage"):
        raise SetupError(f"kernel {kernel!r}: use auto, vmlinux or bzimage")
    if kernel == "auto":
        kernel = "vmlinux" if stamp["kernel_file"] == "vmlinux" else "bzimage"
    kernel_path = cache / ("vmlinux" if kernel == "vmlinux" else "vmlinuz")
    if not kernel_path.exists():
        raise SetupError(f"{kernel_path} is missing: rebuild with tools/guest.py build --force")
    run_dir = _run_dir(name)
    if name in _guest_qemus():
        raise SetupError(f"guest {name} is running already: tools/guest.py stop --name {name}")
    if run_dir.exists():
        _cleanup(name)  # what a killed run left
    run_dir.mkdir(mode=0o700)
    started = time.monotonic()
    try:
        port = port or _free_port()
        _run([qemu_img, "create", "-q", "-f", "qcow2", "-b", str(cache / "disk.img"), "-F", "raw",
              str(run_dir / "disk.qcow2")], timeout=60)
        config = run_dir / "ssh_config"
        config.write_text(_ssh_config_text(name, port, cache / KEY, run_dir))
        # -daemonize: QEMU returns once the VM runs, or fails here with its reason (a port in use).
        _run(_qemu_argv(qemu, cache, kernel_path, run_dir, name, port, smp, memory, append), timeout=120)
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
    run_dir = _run_dir(name)
    pid = pid or _guest_qemus().get(name)
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
        _remove_tree(run_dir)


def stop(name: str = "default", *, timeout: float = POWEROFF_TIMEOUT_S) -> bool:
    """Power NAME off (`systemctl poweroff`, then kill after TIMEOUT s) and remove its run dir.

    Returns whether there was anything to stop.
    """
    _check_name(name)
    run_dir = _run_dir(name)
    pid = _guest_qemus().get(name)
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
    names = set(_guest_qemus())
    names |= {p.name.removeprefix(PREFIX) for p in RUN_ROOT.glob(f"{PREFIX}*") if p.is_dir()}
    stopped = []
    for name in sorted(names):
        if NAME.match(name):
            stop(name, timeout=timeout)
        else:  # not a name boot() gives; still ours by its prefix
            _remove_tree(RUN_ROOT / f"{PREFIX}{name}")
        stopped.append(name)
    return stopped


def guests() -> list[Guest]:
    """The guests running now, from their run dirs and the process table."""
    found = []
    for name, pid in sorted(_guest_qemus().items()):
        try:
            info = json.loads((_run_dir(name) / "guest.json").read_text())
        except (OSError, ValueError):
            info = {"port": 0, "boot_s": 0.0}  # still booting, or its run dir is gone
        found.append(Guest(name, int(info["port"]), pid, _run_dir(name), _run_dir(name) / "ssh_config",
                           float(info["boot_s"])))
    return found


# --- command line ----------------------------------------------------------------------------------


def _status(cache: Path) -> None:
    stamp = _read_stamp(cache)
    if stamp is None:
        print(f"cache: {cache}: not built (tools/guest.py build)")
    else:
        size = (cache / "disk.img").stat().st_blocks * 512 >> 20
        print(f"cache: {cache}: built {stamp['built']}, kernel {stamp['kernel_release']} ({stamp['kernel_file']}), "
              f"disk {size} MiB used, packages: {' '.join(stamp['packages'])}")
    running = guests()
    for guest in running:
        print(f"guest {guest.name}: pid {guest.pid}, port {guest.port or '?'}, ssh -F {guest.ssh_config} {guest.name}")
    if not running:
        print("guests: none running")
    names = {g.name for g in running}
    for left in sorted(RUN_ROOT.glob(f"{PREFIX}*")):
        if left.name.removeprefix(PREFIX) not in names:
            print(f"left over: {left} (tools/guest.py stop --all)")



def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/guest.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cache = argparse.ArgumentParser(add_help=False)
    cache.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"image cache (default {DEFAULT_CACHE})")
    build_cmd = commands.add_parser("build", parents=[cache], help="build the guest image once (root)")
    build_cmd.add_argument("--force", action="store_true", help="rebuild even when the cache matches")
    build_cmd.add_argument("--extra", nargs="+", action="extend", default=[], metavar="PKG",
                           help="more Debian packages for the guest (podman, ...)")
    boot_cmd = commands.add_parser("boot", parents=[cache], help="boot a throwaway guest, print its ssh_config")
    boot_cmd.add_argument("--name", default="default")
    boot_cmd.add_argument("--port", type=int, default=0, help="loopback port for ssh (default: a free one)")
    boot_cmd.add_argument("--smp", type=int, default=DEFAULT_SMP, help=f"vCPUs (default {DEFAULT_SMP})")
    boot_cmd.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MIB, metavar="MiB")
    boot_cmd.add_argument("--timeout", type=float, default=DEFAULT_BOOT_TIMEOUT_S, metavar="S",
                          help="give up when ssh does not answer in S seconds")
    boot_cmd.add_argument("--kernel", choices=("auto", "vmlinux", "bzimage"), default="auto")
    boot_cmd.add_argument("--append", nargs="+", action="extend", default=[], metavar="ARG",
                          help="more kernel command line arguments")
    stop_cmd = commands.add_parser("stop", help="power a guest off and remove its run dir")
    which = stop_cmd.add_mutually_exclusive_group()
    which.add_argument("--name", default="default")
    which.add_argument("--all", action="store_true", help="every conformance-guest-* QEMU and run dir")
    commands.add_parser("status", parents=[cache], help="running guests and the cache")
    ssh_cmd = commands.add_parser("ssh", help="run a command in a guest (NAME -- CMD...)")
    ssh_cmd.add_argument("name")
    ssh_cmd.add_argument("cmd", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; see the module docstring."""
    args = _parser().parse_args(argv)
    return commandline.run(_say, lambda: _command(args))


def _command(args: argparse.Namespace) -> None:
    """One command, by its name; errors end it (commandline.run turns them into exit codes)."""
    if args.command == "build":
        stamp = build(args.cache, force=args.force, extra=args.extra)
        _say(f"image in {args.cache}: kernel {stamp['kernel_release']}, build seconds {stamp['seconds']}")
    elif args.command == "boot":
        guest = boot(args.cache, name=args.name, port=args.port, smp=args.smp, memory=args.memory,
                     timeout=args.timeout, kernel=args.kernel, append=args.append)
        _say(f"guest {guest.name} answers ssh after {guest.boot_s} s; ssh -F {guest.ssh_config} {guest.name}")
        print(guest.ssh_config.read_text(), end="")
    elif args.command == "stop":
        for name in stop_all() if args.all else ([args.name] if stop(args.name) else []):
            _say(f"stopped {name}")
    elif args.command == "status":
        _status(args.cache)
    else:
        _check_name(args.name)
        config = _run_dir(args.name) / "ssh_config"
        if not config.exists():
            raise SetupError(f"guest {args.name} is not running: tools/guest.py boot --name {args.name}")
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        # Like ssh itself: the words are joined into one command line for the guest's shell.
        os.execvp("ssh", ["ssh", "-F", str(config), args.name, "--", *cmd])


if __name__ == "__main__":
    sys.exit(main())
