"""An OCI runtime bundle's config.json: the subset the reference runtime runs, parsed into frozen data and checked.

runtime-spec (config.md, config-linux.md, v1.0.2 as runc 1.1.5 implements it) fields supported:
ociVersion; process.args/env/cwd/user (uid, gid, additionalGids, umask)/capabilities/rlimits/
noNewPrivileges/oomScoreAdj, process.terminal only false; root.path/readonly; hostname; domainname;
mounts[] (destination, type, source, options); linux.namespaces (type, path), uidMappings, gidMappings,
maskedPaths, readonlyPaths, rootfsPropagation, sysctl, timeOffsets.

Checked as the spec asks, each failure a `ConfigError` that names the field:
- config-linux.md § Namespaces: "If a namespace type is not supported ... the runtime MUST generate an
  error", "path ... MUST be an absolute path", "Duplicated namespaces ... MUST generate an error";
- § User namespace mappings need a user namespace; § Masked/Readonly paths: "values MUST be absolute";
- config.md § POSIX process: args "at least one entry is REQUIRED", cwd "MUST be an absolute path".
And what the reference runtime needs to stay safe: a new mount namespace (it mounts there, never on the
host), a UTS namespace of the container's own for hostname/domainname, and each sysctl in a namespace of
the container's own (as runc's libcontainer/configs/validate does), so no setting reaches the host.

Unknown properties are ignored (config.md § Extensibility: runtimes "MUST ignore unknown properties").
Known ones the runtime does not implement are in one place, `IGNORED` (accepted, and why that is
harmless for a conformance reference) or `REFUSED` (an error, because running without them would run
a different container than the one asked for).

`default_config(args, ...)` is the config.json `runc spec` writes, adjusted so runc 1.1.5, crun 1.8.1 and
this runtime all run it unchanged (see its docstring).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conformance.ref import nsapi
from conformance.ref.credentials import CAPABILITIES, RLIMITS
from conformance.ref.defaultspec import default_config
from conformance.ref.errors import RefError
from conformance.ref.mountopts import PROPAGATION, MountFlags, parse_options

#: config-linux.md § Namespaces: the types and their clone(2) flags.
NAMESPACE_FLAGS: dict[str, int] = {
    "pid": nsapi.CLONE_NEWPID, "network": nsapi.CLONE_NEWNET, "mount": nsapi.CLONE_NEWNS, "ipc": nsapi.CLONE_NEWIPC,
    "uts": nsapi.CLONE_NEWUTS, "user": nsapi.CLONE_NEWUSER, "cgroup": nsapi.CLONE_NEWCGROUP,
    "time": nsapi.CLONE_NEWTIME,
}
#: The /proc/<pid>/ns entry of each type (namespaces(7)).
NS_FILES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts", "user": "user",
            "cgroup": "cgroup", "time": "time"}

#: Accepted and not applied. Each is harmless here because the project writes its bundles itself and
#: checks namespaces, mounts and credentials, which none of these change.
IGNORED: dict[str, str] = {
    "annotations": "free-form metadata (config.md § Annotations)",
    "linux.cgroupsPath": "no cgroup is made; the container stays in the runtime's cgroups (a later task adds them)",
    "linux.resources": "no cgroup limits (runc spec's device rule list is accepted for that reason)",
    "linux.seccomp": "no system call filter: the container may make every call its capabilities allow",
    "linux.intelRdt": "no resctrl group",
    "linux.personality": "the execution domain stays the runtime's",
    "linux.mountLabel": "no SELinux label on mounts",
    "linux.memoryPolicy": "the NUMA policy stays the runtime's",
    "process.apparmorProfile": "no AppArmor profile",
    "process.selinuxLabel": "no SELinux label",
    "process.consoleSize": "no console (process.terminal must be false)",
    "process.ioPriority": "the I/O priority stays the runtime's",
    "process.scheduler": "the scheduling policy stays the runtime's",
    "process.execCPUAffinity": "the CPU affinity stays the runtime's",
}
#: Known fields refused when set: running without them would not be the container the bundle describes.
REFUSED: dict[str, str] = {
    "process.terminal": "true needs a console (a pseudo-terminal and console socket), which this runtime lacks",
    "hooks": "hooks are not run",
    "linux.devices": "device nodes beyond the default ones are not made",
    "linux.netDevices": "network devices are not moved into the container",
}

#: sysctls that live in a namespace, as runc's validator sorts them (ipc_namespaces(7)).
_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                          "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"})


class ConfigError(RefError):
    """config.json is malformed or asks for what the runtime cannot do; names the field and what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"config.json {field}: {problem}")


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
class Mount:
    """A mounts[] entry; `flags` are its options as mount(2) takes them."""

    destination: str
    type: str | None
    source: str | None
    options: tuple[str, ...]
    flags: MountFlags


@dataclass(frozen=True, slots=True)
class User:
    """process.user."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    umask: int | None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """process.capabilities: the five sets, by name."""

    bounding: tuple[str, ...]
    effective: tuple[str, ...]
    inheritable: tuple[str, ...]
    permitted: tuple[str, ...]
    ambient: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rlimit:
    """One process.rlimits entry."""

    type: str
    soft: int
    hard: int


@dataclass(frozen=True, slots=True)
class Process:
    """process: what runs in the container, as whom, where."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: User
    capabilities: Capabilities | None
    rlimits: tuple[Rlimit, ...]
    no_new_privileges: bool
    oom_score_adj: int | None


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


@dataclass(frozen=True, slots=True)
class Spec:
    """A parsed config.json; `root_path` is absolute (config.md: relative paths are to the bundle)."""

    oci_version: str
    process: Process
    root_path: str
    root_readonly: bool
    hostname: str | None
    domainname: str | None
    mounts: tuple[Mount, ...]
    linux: Linux
    ignored: tuple[str, ...]  # the IGNORED fields this config sets

    def namespace(self, kind: str) -> Namespace | None:
        """The linux.namespaces entry of `kind`, if any."""
        return next((n for n in self.linux.namespaces if n.type == kind), None)


# Reading ------------------------------------------------------------------------------------------------


def load_bundle(bundle: str) -> Spec:
    """Read and check `bundle`/config.json."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise ConfigError("", f"{path} does not exist (a bundle is a directory with config.json and the "
                              "root filesystem; `spec` writes a default one)") from None
    except OSError as err:
        raise ConfigError("", f"{path}: {err.strerror}") from None
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise ConfigError("", f"{path} is not valid JSON: {err}") from None
    return parse_config(doc, bundle)


def parse_config(doc: object, bundle: str) -> Spec:
    """Check a config.json document (already decoded) and return it as a Spec."""
    top = _obj(doc, "(the document)")
    version = _str(top.get("ociVersion"), "ociVersion")
    if version.split(".")[0] != "1":
        raise ConfigError("ociVersion", f"{version!r}: this runtime implements runtime-spec 1.x")
    for field, why in REFUSED.items():
        value = _lookup(top, field)
        if value not in (None, False, [], {}):
            raise ConfigError(field, f"not supported by the reference runtime: {why}")
    process = _process(_obj(top.get("process"), "process"))
    root = _obj(top.get("root"), "root")
    root_path = os.path.realpath(os.path.join(bundle, _str(root.get("path"), "root.path")))
    if not os.path.isdir(root_path):
        raise ConfigError("root.path", f"{root_path} is not a directory")
    linux = _linux(_obj(top.get("linux", {}), "linux"))
    mounts = tuple(_mount(_obj(m, f"mounts[{n}]"), f"mounts[{n}]")
                   for n, m in enumerate(_list(top.get("mounts", []), "mounts")))
    spec = Spec(version, process, root_path, _bool(root.get("readonly", False), "root.readonly"),
                _opt_str(top.get("hostname"), "hostname"), _opt_str(top.get("domainname"), "domainname"),
                mounts, linux, tuple(f for f in IGNORED if _lookup(top, f) is not None))
    _check_namespaces(spec)
    return spec


def _process(doc: Mapping[str, Any]) -> Process:
    args = _strs(doc.get("args"), "process.args")
    if not args:
        raise ConfigError("process.args", "empty: at least one entry (the program) is required")
    cwd = _absolute(doc.get("cwd"), "process.cwd")
    env = _strs(doc.get("env", []), "process.env")
    for n, item in enumerate(env):
        if "=" not in item:
            raise ConfigError(f"process.env[{n}]", f"{item!r} is not KEY=value")
    user = _obj(doc.get("user"), "process.user")
    umask = user.get("umask")
    users = User(_int(user.get("uid"), "process.user.uid"), _int(user.get("gid"), "process.user.gid"),
                 tuple(_int(g, f"process.user.additionalGids[{n}]")
                       for n, g in enumerate(_list(user.get("additionalGids", []), "process.user.additionalGids"))),
                 None if umask is None else _int(umask, "process.user.umask"))
    caps = None
    if doc.get("capabilities") is not None:
        found = _obj(doc["capabilities"], "process.capabilities")
        sets = {}
        for kind in ("bounding", "effective", "inheritable", "permitted", "ambient"):
            names = _strs(found.get(kind, []), f"process.capabilities.{kind}")
            for name in names:
                if name not in CAPABILITIES:
                    raise ConfigError(f"process.capabilities.{kind}", f"unknown capability {name!r} "
                                      "(capabilities(7) names, like CAP_KILL)")
            sets[kind] = names
        caps = Capabilities(**sets)
    rlimits = []
    for n, item in enumerate(_list(doc.get("rlimits", []), "process.rlimits")):
        where = f"process.rlimits[{n}]"
        limit = _obj(item, where)
        kind = _str(limit.get("type"), f"{where}.type")
        if kind not in RLIMITS:
            raise ConfigError(f"{where}.type", f"unknown rlimit {kind!r} (getrlimit(2) names, like RLIMIT_NOFILE)")
        rlimits.append(Rlimit(kind, _int(limit.get("soft"), f"{where}.soft"), _int(limit.get("hard"), f"{where}.hard")))
    oom = doc.get("oomScoreAdj")
    return Process(args, env, cwd, users, caps, tuple(rlimits),
                   _bool(doc.get("noNewPrivileges", False), "process.noNewPrivileges"),
                   None if oom is None else _int(oom, "process.oomScoreAdj", minimum=-1000))


def _mount(doc: Mapping[str, Any], where: str) -> Mount:
    destination = _absolute(doc.get("destination"), f"{where}.destination")
    kind = _opt_str(doc.get("type"), f"{where}.type")
    source = _opt_str(doc.get("source"), f"{where}.source")
    options = _strs(doc.get("options", []), f"{where}.options")
    flags = parse_options(options, kind)
    if flags.bind and not source:
        raise ConfigError(f"{where}.source", "a bind mount needs a source")
    if kind in ("cgroup", "cgroup2"):
        raise ConfigError(f"{where}.type", f"{kind!r} on {destination}: cgroup filesystems are not mounted by the "
                          "reference runtime yet; leave the mount out")
    return Mount(destination, kind, source, options, flags)


def _linux(doc: Mapping[str, Any]) -> Linux:
    namespaces: list[Namespace] = []
    for n, item in enumerate(_list(doc.get("namespaces", []), "linux.namespaces")):
        where = f"linux.namespaces[{n}]"
        entry = _obj(item, where)
        kind = _str(entry.get("type"), f"{where}.type")
        if kind not in NAMESPACE_FLAGS:
            raise ConfigError(f"{where}.type", f"unknown namespace type {kind!r} (one of {', '.join(NAMESPACE_FLAGS)})")
        if any(other.type == kind for other in namespaces):
            raise ConfigError(f"{where}.type", f"{kind!r} is listed twice (config-linux.md: duplicated namespaces "
                              "are an error)")
        path = entry.get("path")
        namespaces.append(Namespace(kind, None if path in (None, "") else _absolute(path, f"{where}.path")))
    masked = tuple(_absolute(p, f"linux.maskedPaths[{n}]")
                   for n, p in enumerate(_list(doc.get("maskedPaths", []), "linux.maskedPaths")))
    readonly = tuple(_absolute(p, f"linux.readonlyPaths[{n}]")
                     for n, p in enumerate(_list(doc.get("readonlyPaths", []), "linux.readonlyPaths")))
    propagation = _opt_str(doc.get("rootfsPropagation"), "linux.rootfsPropagation") or None
    if propagation is not None and propagation not in PROPAGATION:
        raise ConfigError("linux.rootfsPropagation", f"{propagation!r} is not one of shared, slave, private, "
                          "unbindable (or their r- forms)")
    sysctl = _obj(doc.get("sysctl", {}), "linux.sysctl")
    for key, value in sysctl.items():
        if not isinstance(value, str):
            raise ConfigError(f"linux.sysctl.{key}", f"expected a string, got {value!r}")
        if "/" in key or ".." in key or not key:
            raise ConfigError(f"linux.sysctl.{key}", "not a sysctl name (dot-separated, like kernel.shmmax)")
    offsets = []
    for clock, value in _obj(doc.get("timeOffsets", {}), "linux.timeOffsets").items():
        entry = _obj(value, f"linux.timeOffsets.{clock}")
        if clock not in ("monotonic", "boottime"):
            raise ConfigError(f"linux.timeOffsets.{clock}", "only monotonic and boottime clocks have offsets")
        offsets.append((clock, _int(entry.get("secs", 0), f"linux.timeOffsets.{clock}.secs", minimum=None),
                        _int(entry.get("nanosecs", 0), f"linux.timeOffsets.{clock}.nanosecs")))
    return Linux(tuple(namespaces), _mappings(doc, "uidMappings"), _mappings(doc, "gidMappings"), masked, readonly,
                 propagation, tuple(sorted(sysctl.items())), tuple(offsets))


def _mappings(doc: Mapping[str, Any], key: str) -> tuple[IdMapping, ...]:
    found = []
    for n, item in enumerate(_list(doc.get(key, []), f"linux.{key}")):
        where = f"linux.{key}[{n}]"
        entry = _obj(item, where)
        size = _int(entry.get("size"), f"{where}.size")
        if size == 0:
            raise ConfigError(f"{where}.size", "0: a mapping maps at least one id")
        found.append(IdMapping(_int(entry.get("containerID"), f"{where}.containerID"),
                               _int(entry.get("hostID"), f"{where}.hostID"), size))
    return tuple(found)


def _check_namespaces(spec: Spec) -> None:
    """What the namespace list must hold for the rest of the config to be safe and meaningful."""
    linux = spec.linux
    user, mount = spec.namespace("user"), spec.namespace("mount")
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
    uts = spec.namespace("uts")
    for key, value in (("hostname", spec.hostname), ("domainname", spec.domainname)):
        if value is not None and uts is None:
            raise ConfigError(key, f"setting the {key} needs a UTS namespace of the container's own "
                              "(add {\"type\": \"uts\"} to linux.namespaces)")
    for key, _value in linux.sysctl:
        kind = sysctl_namespace(key)
        if kind is None:
            raise ConfigError(f"linux.sysctl.{key}", "not in a namespace of the container's own: it would change "
                              "the host (only ipc, net.* and UTS sysctls can be set)")
        if spec.namespace(kind) is None:
            raise ConfigError(f"linux.sysctl.{key}", f"needs a {kind} namespace in linux.namespaces")
    if linux.time_offsets and spec.namespace("time") is None:
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


# Typed getters: each names the field in its error ------------------------------------------------------


def _lookup(doc: Mapping[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(where, f"expected an object, got {_shown(value)}")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(where, f"expected an array, got {_shown(value)}")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {_shown(value)}")
    return value


def _opt_str(value: object, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _strs(value: object, where: str) -> tuple[str, ...]:
    items = _list(value, where)
    for n, item in enumerate(items):
        _str(item, f"{where}[{n}]")
    return tuple(items)


def _int(value: object, where: str, minimum: int | None = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(where, f"expected an integer, got {_shown(value)}")
    if minimum is not None and value < minimum:
        raise ConfigError(where, f"{value} is below {minimum}")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {_shown(value)}")
    return value


def _absolute(value: object, where: str) -> str:
    path = _str(value, where)
    if not path.startswith("/"):
        raise ConfigError(where, f"{path!r} is not an absolute path (the spec requires one)")
    return os.path.normpath(path)


def _shown(value: object) -> str:
    return "nothing (the field is required)" if value is None else f"{type(value).__name__} {value!r}"[:80]

__all__ = ["IGNORED", "NAMESPACE_FLAGS", "NS_FILES", "REFUSED", "Capabilities", "ConfigError", "IdMapping", "Linux",
           "Mount", "Namespace", "Process", "Rlimit", "Spec", "User", "default_config", "load_bundle",
           "parse_config", "sysctl_namespace"]
