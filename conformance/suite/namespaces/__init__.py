"""Tests of the namespaces area: what a container's process sees from inside, and what the host sees.

Every test runs one "ns.run" scenario (conformance/scenarios/namespaces.py): a busybox shell script in a
container of the runtime under test, which prints `key=value` lines; the probe adds what it saw on the
host. The helpers here read that one observation shape; a test compares only its clause's fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from conformance.scenarios.namespaces import lines
from conformance.target import Target

#: The `readlink /proc/self/ns/X` form: "net:[4026531840]".
_NS_LINK = re.compile(r"^\w+:\[(\d+)\]$")
#: Script lines that print the container's own namespace inodes as ns_<type>=<link>.
PRINT_NAMESPACES = ("for n in pid net ipc uts mnt cgroup user; do echo ns_$n=$(readlink /proc/self/ns/$n); done; ")
NS_NAMES = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt", "cgroup": "cgroup",
            "user": "user"}


def ran(target: Target, seen: Mapping[str, Any]) -> dict[str, str]:
    """Fail unless the container ran its script to the end; its key=value output."""
    __tracebackhide__ = True
    target.expect("container exit status", 0, seen.get("exit"), hint=str(seen.get("stderr") or "")[-300:])
    return lines(seen)


def namespaces_inside(said: Mapping[str, str]) -> dict[str, int | None]:
    """Namespace type -> inode, from the PRINT_NAMESPACES lines."""
    found: dict[str, int | None] = {}
    for kind, name in NS_NAMES.items():
        match = _NS_LINK.match(said.get(f"ns_{name}", ""))
        found[kind] = int(match.group(1)) if match else None
    return found


def mountinfo_lines(text: str) -> list[tuple[str, str]]:
    """(mount point, fs type) of each /proc/self/mountinfo line the script printed as mi=... lines."""
    found = []
    for line in text.splitlines():
        if not line.startswith("mi="):
            continue
        fields = line[3:].split()
        if " - " in line[3:]:
            after = line[3:].split(" - ", 1)[1].split()
            found.append((fields[4], after[0] if after else ""))
    return found
