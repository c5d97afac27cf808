"""The config.json `runc spec` writes, as a dict: the one bundle runc, crun and the reference runtime all run.

It follows runc 1.1.5's `runc spec` (libcontainer/specconv/example.go, checked against the command's
output): runtime-spec config-linux.md § Default Filesystems (/proc, /sys, /dev/pts, /dev/shm) plus /dev
as a tmpfs and /dev/mqueue, runc's maskedPaths and readonlyPaths, the three capabilities
(CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE), RLIMIT_NOFILE 1024 and noNewPrivileges. It differs
where the project needs it to:

- process.terminal is false: `runc run` without a console socket refuses a terminal;
- no /sys/fs/cgroup mount: the reference runtime makes and limits a container's cgroup (for a
  linux.cgroupsPath or limits in linux.resources) but mounts no cgroup filesystem in the container, and
  refuses such mounts (runc and crun would mount one hierarchy per v1 controller on a hybrid host);
- the namespaces are the caller's (default: runc's five plus cgroup, as Docker and Podman ask);
- with `user_ns_maps`, the same mappings for uids and gids and what `runc spec --rootless` changes for
  a user namespace: /sys is a read-only rbind of the host's /sys (sysfs cannot be mounted in a user
  namespace that does not own the network namespace, and a bind works in both cases), devpts has no
  gid=5 (a gid the mappings may not hold), and /dev/mqueue is left out when the IPC namespace is not
  new (mqueue needs an IPC namespace owned by the user namespace; mount_namespaces(7)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: runc's default masked and read-only paths (libcontainer/specconv/example.go).
MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEFAULT_NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")
DEFAULT_CAPABILITIES = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def default_config(args: Sequence[str], *, hostname: str | None = None,
                   namespaces: Sequence[str] = DEFAULT_NAMESPACES,
                   user_ns_maps: Sequence[tuple[int, int, int]] | None = None,
                   readonly_root: bool = False) -> dict[str, Any]:
    """A bundle config for `args` (root.path "rootfs"); `user_ns_maps` are (containerID, hostID, size) triples.

    Giving maps adds a user namespace if `namespaces` lacks one. The dict is fresh on every call: callers
    change it before writing config.json.
    """
    kinds = list(namespaces)
    if user_ns_maps and "user" not in kinds:
        kinds.append("user")
    user_ns = "user" in kinds
    caps = list(DEFAULT_CAPABILITIES)
    devpts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] + ([] if user_ns else ["gid=5"])
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": devpts},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    ]
    if not user_ns or "ipc" in kinds:
        mounts.append({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                       "options": ["nosuid", "noexec", "nodev"]})
    if user_ns:
        mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                       "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    else:
        mounts.append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                       "options": ["nosuid", "noexec", "nodev", "ro"]})
    linux: dict[str, Any] = {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": kind} for kind in kinds],
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if user_ns_maps:
        maps = [{"containerID": inside, "hostID": outside, "size": size} for inside, outside, size in user_ns_maps]
        linux["uidMappings"] = maps
        linux["gidMappings"] = [dict(one) for one in maps]
    config: dict[str, Any] = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": [DEFAULT_PATH, "TERM=xterm"],
            "cwd": "/",
            "capabilities": {kind: list(caps) for kind in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": readonly_root},
        "mounts": mounts,
        "linux": linux,
    }
    if hostname is not None:
        config["hostname"] = hostname
    return config
