"""The QEMU guest of tools/guest.py as a bed host: booted and stopped inside the controller namespace.

QEMU's ssh port forward listens on the loopback of the namespace it runs in; booted there, the guest is
reached from the controller like every other host, and never from this machine's own network.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time

from tools import guest as guest_tool
from tools.bed_commands import BedError
from tools.bed_network import CTL_NS, NETNS_DIR, in_netns
from tools.bed_processes import kill
from tools.bed_state import GUEST_HOST, GUEST_NAME, GUEST_RUN_DIR, RUN_DIR, TOOL, BedHost
from tools.commandline import tail

GUEST_TOOL = TOOL.with_name("guest.py")


def start_guest(timeout: float, smp: int, memory: int) -> subprocess.Popen[bytes]:
    """tools/guest.py boot inside the controller namespace: QEMU's port forward listens on its loopback."""
    log = (RUN_DIR / "guest-boot.log").open("w")
    with log:
        return subprocess.Popen(
            in_netns(CTL_NS, sys.executable, "-S", str(GUEST_TOOL), "boot", "--name", GUEST_NAME,
                     "--timeout", str(timeout), "--smp", str(smp), "--memory", str(memory)),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


def finish_guest(booting: subprocess.Popen[bytes], timeout: float) -> BedHost:
    """Wait for the `guest.py boot` that start_guest began; the guest as a bed host, or BedError."""
    try:
        code = booting.wait(timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        stop_process(booting)
        code = -1
    if code != 0:
        log = tail(RUN_DIR / "guest-boot.log")
        raise BedError(f"the guest did not boot (tools/guest.py exit code {code}):\n{log}")
    info = json.loads((GUEST_RUN_DIR / "guest.json").read_text())
    return BedHost(GUEST_HOST, "127.0.0.1", int(info["port"]), guest_tool.DEFAULT_CACHE / guest_tool.KEY, None)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (tools/guest.py cleans up on it), SIGKILL after 60 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_guest() -> bool:
    """Power the bed's guest off from inside the controller namespace, where its ssh port is.

    It is killed when that namespace is gone. Returns whether there was a guest.
    """
    qemu = guest_tool.guest_qemus().get(GUEST_NAME)
    run_dir = GUEST_RUN_DIR
    if qemu is None and not run_dir.exists():
        return False
    if qemu is not None and (NETNS_DIR / CTL_NS).exists():
        with contextlib.suppress(subprocess.TimeoutExpired):
            stop = in_netns(CTL_NS, sys.executable, "-S", str(GUEST_TOOL), "stop", "--name", GUEST_NAME)
            subprocess.run(stop, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    if (qemu := guest_tool.guest_qemus().get(GUEST_NAME)) is not None:
        kill([qemu])  # never ssh to it from here: its port is on the controller namespace's loopback
    try:
        guest_tool.stop(GUEST_NAME)  # its run dir and control master
    except guest_tool.GuestError:  # a `guest.py boot` that a killed `up` left is removing the same files
        time.sleep(1)
        guest_tool.stop(GUEST_NAME)
    return True
