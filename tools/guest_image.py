"""The guest image: debootstrap on tmpfs, configured as a quick-booting test host, cached as ext4.

Built once per machine (minutes) and kept; each boot only puts a throwaway overlay on it. The stamp,
written last, says which packages a cached build has, so that a build with others is redone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tools.guest_commands import SetupError, need, remove_tree, run_command, say
from tools.guest_kernel import extract_vmlinux, make_initramfs

DEFAULT_CACHE = Path("/var/cache/container-conformance/guest")
# Run dirs and the build's work dir live on tmpfs: the root file system of the machines this runs on
# is about 30x slower than tmpfs at creating files, and the qcow2 overlay takes every guest write.
RUN_ROOT = Path("/dev/shm")
# Not under PREFIX (tools/guest_vm.py), so that `stop --all` never touches a build in progress.
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


def read_stamp(cache: Path) -> dict[str, Any] | None:
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
    run_command(["chroot", str(rootfs), "systemctl", "enable", *ENABLED_UNITS], timeout=120)
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

def build(cache: Path = DEFAULT_CACHE, *, force: bool = False, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Build the guest image into CACHE unless a build with the same packages is there; return its stamp.

    debootstrap runs in a tmpfs mounted under /dev/shm (a private mount: /dev/shm itself may be nodev
    or noexec), which is removed afterwards, also on failure or Ctrl-C. The cache gets disk.img (raw
    ext4, sparse), the kernel (vmlinuz and, where it can be extracted, vmlinux), initrd.img, a throwaway
    ed25519 key pair whose public half is root's authorized key, build.log and stamp.json.
    """
    packages = sorted({*PACKAGES, *extra})
    if not force and _stamp_matches(stamp := read_stamp(cache), packages):
        assert stamp is not None
        return stamp
    if os.geteuid() != 0:
        raise SetupError("building the guest needs root (debootstrap, chroot, mount)")
    debootstrap = need("debootstrap", "debootstrap")
    mkfs = need("mkfs.ext4", "e2fsprogs")
    keygen = need("ssh-keygen", "openssh-client")
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache):
        if not force and _stamp_matches(stamp := read_stamp(cache), packages):
            assert stamp is not None
            return stamp  # another process built it while this one waited
        (cache / "stamp.json").unlink(missing_ok=True)  # an interrupted build must not look complete
        log = cache / "build.log"
        log.write_text("")
        os.umask(0o022)
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=RUN_ROOT))
        try:
            run_command(["mount", "-t", "tmpfs", "-o", "mode=0755,size=8g", "conformance-build", str(work)], timeout=30)
            rootfs = work / "rootfs"
            say(f"debootstrap {SUITE} into {rootfs} (a few minutes; log: {log})")
            run_command([debootstrap, "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(rootfs),
                         MIRROR], timeout=3600, log=log)
            bootstrapped = time.monotonic()
            if not (cache / KEY).exists():
                run_command([keygen, "-q", "-t", "ed25519", "-N", "", "-C", HOSTNAME, "-f", str(cache / KEY)],
                            timeout=30)
            say("configuring the guest")
            _configure(rootfs, cache / f"{KEY}.pub")
            [bzimage] = sorted((rootfs / "boot").glob("vmlinuz-*"))
            release = bzimage.name.removeprefix("vmlinuz-")
            shutil.copyfile(bzimage, cache / "vmlinuz")
            make_initramfs(rootfs, release, cache / "initrd.img")
            kernel_file = "vmlinux" if extract_vmlinux(bzimage, cache / "vmlinux") else "vmlinuz"
            configured = time.monotonic()
            say("writing the disk image")
            image = cache / "disk.img.part"
            image.unlink(missing_ok=True)
            with image.open("wb") as disk:
                disk.truncate(DISK_SIZE)
            run_command([mkfs, "-q", "-F", "-L", "conformance-root", "-d", str(rootfs), str(image)], timeout=900,
                        log=log)
            image.replace(cache / "disk.img")
            finished = time.monotonic()
        finally:
            remove_tree(work)
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
