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
import os
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as tools/guest.py: make the `tools` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools import commandline
from tools.guest_commands import GuestError, SetupError, say
from tools.guest_image import (
    BUILD_PREFIX,
    DEFAULT_CACHE,
    DELEGATE_UNIT,
    DISK_SIZE,
    ENABLED_UNITS,
    GUEST_FILES,
    HOSTNAME,
    KEY,
    MASKED_UNITS,
    MIRROR,
    NETWORK_UNIT,
    PACKAGES,
    READY_MARK,
    READY_UNIT,
    RUN_ROOT,
    STAMP_FORMAT,
    SUITE,
    build,
    read_stamp,
)
from tools.guest_kernel import INITRAMFS_INIT, INITRAMFS_MODULES
from tools.guest_vm import (
    DEFAULT_BOOT_TIMEOUT_S,
    DEFAULT_MEMORY_MIB,
    DEFAULT_SMP,
    KERNEL_ARGS,
    NAME,
    POWEROFF_TIMEOUT_S,
    PREFIX,
    READY_GRACE_S,
    Guest,
    boot,
    check_name,
    guest_qemus,
    guest_run_dir,
    guests,
    run,
    stop,
    stop_all,
)

# What tools/guest.py offered before it was split into the guest_* modules: tests, bench and tools/bed.py use
# it (tools/bed.py and tests/e2e/test_bed.py also guest_qemus and read_stamp).
__all__ = [
    "BUILD_PREFIX", "DEFAULT_BOOT_TIMEOUT_S", "DEFAULT_CACHE", "DEFAULT_MEMORY_MIB", "DEFAULT_SMP", "DELEGATE_UNIT",
    "DISK_SIZE", "ENABLED_UNITS", "GUEST_FILES", "HOSTNAME", "INITRAMFS_INIT", "INITRAMFS_MODULES", "KERNEL_ARGS",
    "KEY", "MASKED_UNITS", "MIRROR", "NAME", "NETWORK_UNIT", "PACKAGES", "POWEROFF_TIMEOUT_S", "PREFIX",
    "READY_GRACE_S", "READY_MARK", "READY_UNIT", "RUN_ROOT", "STAMP_FORMAT", "SUITE", "Guest", "GuestError",
    "SetupError", "boot", "build", "guest_qemus", "guests", "main", "read_stamp", "run", "stop", "stop_all",
]


def _status(cache: Path) -> None:
    stamp = read_stamp(cache)
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
    return commandline.run(say, lambda: _command(args))


def _command(args: argparse.Namespace) -> None:
    """One command, by its name; errors end it (commandline.run turns them into exit codes)."""
    if args.command == "build":
        stamp = build(args.cache, force=args.force, extra=args.extra)
        say(f"image in {args.cache}: kernel {stamp['kernel_release']}, build seconds {stamp['seconds']}")
    elif args.command == "boot":
        guest = boot(args.cache, name=args.name, port=args.port, smp=args.smp, memory=args.memory,
                     timeout=args.timeout, kernel=args.kernel, append=args.append)
        say(f"guest {guest.name} answers ssh after {guest.boot_s} s; ssh -F {guest.ssh_config} {guest.name}")
        print(guest.ssh_config.read_text(), end="")
    elif args.command == "stop":
        for name in stop_all() if args.all else ([args.name] if stop(args.name) else []):
            say(f"stopped {name}")
    elif args.command == "status":
        _status(args.cache)
    else:
        check_name(args.name)
        config = guest_run_dir(args.name) / "ssh_config"
        if not config.exists():
            raise SetupError(f"guest {args.name} is not running: tools/guest.py boot --name {args.name}")
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        # Like ssh itself: the words are joined into one command line for the guest's shell.
        os.execvp("ssh", ["ssh", "-F", str(config), args.name, "--", *cmd])


if __name__ == "__main__":
    sys.exit(main())
