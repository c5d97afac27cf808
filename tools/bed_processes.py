"""The bed's processes, found in the process table and killed.

A killed `up` leaves sshds and a QEMU that no record lists: they are found by their network namespace or
by what their command line names, never by a process name that someone else's processes share.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from tools import guest as guest_tool
from tools.bed_network import NETNS_DIR, PREFIX
from tools.bed_state import GUEST_NAME, GUEST_RUN_DIR, RUN_DIR

KILL_GRACE_S = 3.0


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def is_alive(pid: int) -> bool:
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
        if not entry.name.isdigit() or (pid := int(entry.name)) in mine or not is_alive(pid):
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


def kill(pids: Sequence[int]) -> None:
    """SIGTERM, then SIGKILL what is still there after KILL_GRACE_S."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while any(is_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [pid for pid in pids if is_alive(pid)]
        if not pids:
            return
