"""Facts: what a host offers, probed once per host per run (like moby's check-config.sh, but probed).

Facts decide skips ("not applicable here") and are printed in every report, because a kernel or
runtime upgrade explains most changes between two runs.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
from typing import Any

from conformance.probe import cgroupfs
from conformance.probe.actions import Context, action

JsonDict = dict[str, Any]

#: Tools whose versions the facts record: name -> argv that prints a version.
TOOLS: dict[str, list[str]] = {
    "runc": ["runc", "--version"],
    "crun": ["crun", "--version"],
    "podman": ["podman", "--version"],
    "docker": ["docker", "--version"],
    "dockerd": ["dockerd", "--version"],
    "skopeo": ["skopeo", "--version"],
    "umoci": ["umoci", "--version"],
    "fuse-overlayfs": ["fuse-overlayfs", "--version"],
    "busybox": ["busybox"],
}
_VERSION = re.compile(r"(\d+\.\d+(?:\.\d+)?(?:[-+~][0-9A-Za-z.+~-]*)?)")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def os_release() -> JsonDict:
    """ID, VERSION_ID and PRETTY_NAME from /etc/os-release."""
    fields: JsonDict = {}
    for line in (_read("/etc/os-release") or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("ID", "VERSION_ID", "PRETTY_NAME", "ID_LIKE"):
            fields[key.lower()] = value.strip().strip('"')
    return fields


def tool_version(argv: list[str]) -> JsonDict:
    """Path and version of a tool, or why there is none."""
    path = shutil.which(argv[0])
    if path is None:
        return {"present": False, "path": None, "version": None}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"present": True, "path": path, "version": None, "error": str(exc)}
    text = (done.stdout or done.stderr).strip()
    match = _VERSION.search(text)
    return {"present": True, "path": path, "version": match.group(1) if match else None,
            "banner": text.splitlines()[0][:200] if text else ""}


def overlay_facts() -> JsonDict:
    """Whether overlay is there and its module parameters (the feature defaults)."""
    params_dir = "/sys/module/overlay/parameters"
    params: JsonDict = {}
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(params_dir)):
            params[name] = _read(os.path.join(params_dir, name))
    types = (_read("/proc/filesystems") or "").split()
    kernel = tuple(int(x) for x in re.findall(r"\d+", platform.release())[:2])
    return {
        "listed": "overlay" in types,
        "parameters": params,
        # userxattr arrived in 5.11 (overlayfs.rst); user.* xattrs on a tmpfs upper in 6.6
        "userxattr": kernel >= (5, 11),
        "fuse": "fuse" in types or os.path.exists("/dev/fuse"),
        "kernel": list(kernel),
        # A feature the module knows has a module parameter of its name (overlayfs.rst: "Module options").
        "redirect_dir": "redirect_dir" in params,
        "metacopy": "metacopy" in params,
        "index": "index" in params,
        # Data-only lower layers ("lowerdir=l1::data") arrived in 6.5 (fs/overlayfs/params.c).
        "data_only": kernel >= (6, 5),
        # The overlay scenarios build their layers on a tmpfs: user.* xattrs there need 6.6 (mm/shmem.c).
        "tmpfs_user_xattr": kernel >= (6, 6),
    }


def cgroup_facts() -> JsonDict:
    """Cgroup layout, hierarchies and usable controllers."""
    found = cgroupfs.hierarchies()
    usable = sorted({c for h in found for c in h.controllers})
    return {
        "mode": cgroupfs.mode(found),
        "hierarchies": [{"version": h.version, "mountpoint": h.mountpoint, "controllers": list(h.controllers)}
                        for h in found],
        "controllers": usable,
    }


def security_facts() -> JsonDict:
    """seccomp, AppArmor and SELinux status."""
    status = _read("/proc/self/status") or ""
    seccomp = next((line.split()[1] for line in status.splitlines() if line.startswith("Seccomp:")), None)
    enforce = _read("/sys/fs/selinux/enforce")
    return {
        "seccomp": {"supported": seccomp is not None,
                    "actions": (_read("/proc/sys/kernel/seccomp/actions_avail") or "").split()},
        "apparmor": (_read("/sys/module/apparmor/parameters/enabled") or "N") == "Y",
        "selinux": None if enforce is None else ("enforcing" if enforce == "1" else "permissive"),
    }


def gather() -> JsonDict:
    """All facts of this host, as plain JSON data."""
    uname = platform.uname()
    ns_types = sorted(os.listdir("/proc/self/ns")) if os.path.isdir("/proc/self/ns") else []
    max_userns = _read("/proc/sys/user/max_user_namespaces")
    pid1 = _read("/proc/1/comm")
    cgroups = cgroup_facts()
    tools = {name: tool_version(argv) for name, argv in TOOLS.items()}
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    notes: list[str] = []
    if cgroups["mode"] == "hybrid":
        notes.append("crun refuses hybrid cgroup layouts; podman here needs --runtime runc")
    if 0 <= nofile < 1048576:
        notes.append(f"the hard RLIMIT_NOFILE is {nofile}: podman as root asks for 1048576, so it needs "
                     "explicit --ulimit nofile=N:N --ulimit nproc=N:N")
    return {
        "hostname": uname.node,
        "distro": os_release(),
        "kernel": {"release": uname.release, "version": uname.version},
        "arch": uname.machine,
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "cpus": os.cpu_count(),
        "cgroup": cgroups,
        "overlay": overlay_facts(),
        "namespaces": {"types": ns_types,
                       "max_user_namespaces": int(max_userns) if max_userns and max_userns.isdigit() else None},
        "security": security_facts(),
        "init": {"pid1": pid1, "systemd": pid1 == "systemd" or os.path.isdir("/run/systemd/system")},
        "tools": tools,
        "limits": {"nofile_hard": nofile, "nproc_hard": nproc},
        "docker_socket": next((s for s in ("/run/container-conformance/docker.sock", "/run/docker.sock",
                                           "/var/run/docker.sock") if os.path.exists(s)), None),
        "docker_server": docker_server(),
        "notes": notes,
    }


def docker_server() -> JsonDict:
    """The docker daemon that answers here: socket, client and server version, or why there is none."""
    from conformance.probe.actions import NotApplicable  # noqa: PLC0415
    from conformance.probe.appliers import docker_cli  # noqa: PLC0415

    try:
        client, env = docker_cli()
    except NotApplicable as exc:
        return {"version": None, "error": str(exc)}
    done = subprocess.run([client, "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True,
                          timeout=20, check=False, env={**os.environ, **env})
    return {"version": done.stdout.strip() or None, "client": client, "host": env["DOCKER_HOST"]}


@action("facts.gather")
def facts_action(_params: JsonDict, _ctx: Context) -> JsonDict:
    """Facts as a probe action, so the controller gets them with the same call as everything else."""
    return gather()
