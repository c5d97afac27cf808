"""config.json's `linux` object: namespaces, id mappings, masked and read-only paths, propagation, sysctl, cgroups.

config-linux.md, checked as it asks: "If a namespace type is not supported ... the runtime MUST generate
an error", a namespace "path ... MUST be an absolute path", "Duplicated namespaces ... MUST generate an
error"; uidMappings/gidMappings need a user namespace (§ User namespace mappings); maskedPaths and
readonlyPaths "values MUST be absolute". And what the reference runtime needs to stay safe
(`check_namespaces`): a new mount namespace (it mounts there, never on the host), a UTS namespace of the
container's own for hostname and domainname, and each sysctl in a namespace of the container's own, as
runc's libcontainer/configs/validate sorts them, so no setting reaches the host. cgroupsPath and the
resources the runtime applies (memory, pids, cpu, unified) are read by cglayout.check_path and
cglimits.parse_resources.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conformance.ref import nsapi
from conformance.ref.cglayout import check_path
from conformance.ref.cglimits import NO_LIMITS, Resources, parse_resources
from conformance.ref.mountopts import PROPAGATION
from conformance.ref.specread import ConfigError, absolute, array, integer, obj, opt_string, string

#: config-linux.md § Namespaces: the types and their clone(2) flags.
NAMESPACE_FLAGS: dict[str, int] = {
    "pid": nsapi.CLONE_NEWPID, "network": nsapi.CLONE_NEWNET, "mount": nsapi.CLONE_NEWNS, "ipc": nsapi.CLONE_NEWIPC,
    "uts": nsapi.CLONE_NEWUTS, "user": nsapi.CLONE_NEWUSER, "cgroup": nsapi.CLONE_NEWCGROUP,
    "time": nsapi.CLONE_NEWTIME,
}
#: The /proc/<pid>/ns entry of each type (namespaces(7)).
NS_FILES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts", "user": "user",
            "cgroup": "cgroup", "time": "time"}
#: sysctls that live in a namespace, as runc's validator sorts them (ipc_namespaces(7)).
_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                          "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"})


@dataclass(frozen=True, slots=True)
class IdMapping:
    """One line of uid_map or gid_map: `size` ids from `container_id` in the namespace are `host_id`.. outside."""

    container_id: int
    host_id: int
    size: int


@dataclass(frozen=True, slots=True)
class Namespace:
    """A linux.namespaces entry: a new namespace of `type`, or the one at `path` joined."""

    type: str
    path: str | None

    @property
    def flag(self) -> int:
        """The clone(2) flag of the type."""
        return NAMESPACE_FLAGS[self.type]


@dataclass(frozen=True, slots=True)
class Linux:
    """The linux object's supported fields."""

    namespaces: tuple[Namespace, ...]
    uid_mappings: tuple[IdMapping, ...]
    gid_mappings: tuple[IdMapping, ...]
    masked_paths: tuple[str, ...]
    readonly_paths: tuple[str, ...]
    rootfs_propagation: str | None
    sysctl: tuple[tuple[str, str], ...]
    time_offsets: tuple[tuple[str, int, int], ...]  # (clock, secs, nanosecs)
    cgroups_path: str | None = None  # as given (absolute, or relative to the runtime's cgroup), normalised
    resources: Resources = NO_LIMITS

    @property
    def wants_cgroup(self) -> bool:
        """A cgroup is made for a cgroupsPath or a limit; the device list alone (runc spec's default) asks for none."""
        return self.cgroups_path is not None or self.resources.any_set

    def namespace(self, kind: str) -> Namespace | None:
        """The namespaces entry of `kind`, if any."""
        return next((n for n in self.namespaces if n.type == kind), None)


def parse_linux(doc: Mapping[str, Any]) -> Linux:
    """The linux object, each entry checked."""
    namespaces: list[Namespace] = []
    for n, item in enumerate(array(doc.get("namespaces", []), "linux.namespaces")):
        where = f"linux.namespaces[{n}]"
        entry = obj(item, where)
        kind = string(entry.get("type"), f"{where}.type")
        if kind not in NAMESPACE_FLAGS:
            raise ConfigError(f"{where}.type", f"unknown namespace type {kind!r} (one of {', '.join(NAMESPACE_FLAGS)})")
        if any(other.type == kind for other in namespaces):
            raise ConfigError(f"{where}.type", f"{kind!r} is listed twice (config-linux.md: duplicated namespaces "
                              "are an error)")
        path = entry.get("path")
        namespaces.append(Namespace(kind, None if path in (None, "") else absolute(path, f"{where}.path")))
    masked = tuple(absolute(p, f"linux.maskedPaths[{n}]")
                   for n, p in enumerate(array(doc.get("maskedPaths", []), "linux.maskedPaths")))
    readonly = tuple(absolute(p, f"linux.readonlyPaths[{n}]")
                     for n, p in enumerate(array(doc.get("readonlyPaths", []), "linux.readonlyPaths")))
    propagation = opt_string(doc.get("rootfsPropagation"), "linux.rootfsPropagation") or None
    if propagation is not None and propagation not in PROPAGATION:
        raise ConfigError("linux.rootfsPropagation", f"{propagation!r} is not one of shared, slave, private, "
                          "unbindable (or their r- forms)")
    sysctl = obj(doc.get("sysctl", {}), "linux.sysctl")
    for key, value in sysctl.items():
        if not isinstance(value, str):
            raise ConfigError(f"linux.sysctl.{key}", f"expected a string, got {value!r}")
        if "/" in key or ".." in key or not key:
            raise ConfigError(f"linux.sysctl.{key}", "not a sysctl name (dot-separated, like kernel.shmmax)")
    offsets = []
    for clock, value in obj(doc.get("timeOffsets", {}), "linux.timeOffsets").items():
        entry = obj(value, f"linux.timeOffsets.{clock}")
        if clock not in ("monotonic", "boottime"):
            raise ConfigError(f"linux.timeOffsets.{clock}", "only monotonic and boottime clocks have offsets")
        offsets.append((clock, integer(entry.get("secs", 0), f"linux.timeOffsets.{clock}.secs", minimum=None),
                        integer(entry.get("nanosecs", 0), f"linux.timeOffsets.{clock}.nanosecs")))
    path = opt_string(doc.get("cgroupsPath"), "linux.cgroupsPath") or None
    return Linux(tuple(namespaces), _mappings(doc, "uidMappings"), _mappings(doc, "gidMappings"), masked, readonly,
                 propagation, tuple(sorted(sysctl.items())), tuple(offsets),
                 None if path is None else check_path(path), parse_resources(obj(doc.get("resources", {}),
                                                                                 "linux.resources")))


def _mappings(doc: Mapping[str, Any], key: str) -> tuple[IdMapping, ...]:
    found = []
    for n, item in enumerate(array(doc.get(key, []), f"linux.{key}")):
        where = f"linux.{key}[{n}]"
        entry = obj(item, where)
        size = integer(entry.get("size"), f"{where}.size")
        if size == 0:
            raise ConfigError(f"{where}.size", "0: a mapping maps at least one id")
        found.append(IdMapping(integer(entry.get("containerID"), f"{where}.containerID"),
                               integer(entry.get("hostID"), f"{where}.hostID"), size))
    return tuple(found)


def check_namespaces(linux: Linux, hostname: str | None, domainname: str | None) -> None:
    """What the namespace list must hold for the rest of the config to be safe and meaningful."""
    user, mount = linux.namespace("user"), linux.namespace("mount")
    for key, maps in (("uidMappings", linux.uid_mappings), ("gidMappings", linux.gid_mappings)):
        if maps and user is None:
            raise ConfigError(f"linux.{key}", "mappings without a user namespace: add {\"type\": \"user\"} to "
                              "linux.namespaces or drop the mappings")
        if maps and user is not None and user.path is not None:
            raise ConfigError(f"linux.{key}", "the user namespace is joined by path and has its mappings already")
        if user is not None and user.path is None and not maps:
            raise ConfigError(f"linux.{key}", "a new user namespace needs mappings (config-linux.md § User "
                              "namespace mappings)")
    if mount is None or mount.path is not None:
        raise ConfigError("linux.namespaces", "the reference runtime needs a new mount namespace "
                          "({\"type\": \"mount\"} without a path): it mounts the container's filesystems there, "
                          "never in the host's")
    uts = linux.namespace("uts")
    for key, value in (("hostname", hostname), ("domainname", domainname)):
        if value is not None and uts is None:
            raise ConfigError(key, f"setting the {key} needs a UTS namespace of the container's own "
                              "(add {\"type\": \"uts\"} to linux.namespaces)")
    for key, _value in linux.sysctl:
        kind = sysctl_namespace(key)
        if kind is None:
            raise ConfigError(f"linux.sysctl.{key}", "not in a namespace of the container's own: it would change "
                              "the host (only ipc, net.* and UTS sysctls can be set)")
        if linux.namespace(kind) is None:
            raise ConfigError(f"linux.sysctl.{key}", f"needs a {kind} namespace in linux.namespaces")
    if linux.time_offsets and linux.namespace("time") is None:
        raise ConfigError("linux.timeOffsets", "offsets need a time namespace in linux.namespaces")


def sysctl_namespace(key: str) -> str | None:
    """The namespace type a sysctl belongs to, or None for the host-wide ones."""
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        return "ipc"
    if key.startswith("net."):
        return "network"
    if key in ("kernel.hostname", "kernel.domainname"):
        return "uts"
    return None
