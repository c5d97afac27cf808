"""An OCI runtime bundle's config.json: the subset the reference runtime runs, parsed into frozen data and checked.

runtime-spec (config.md, config-linux.md, v1.0.2 as runc 1.1.5 implements it) fields supported:
ociVersion; process.args/env/cwd/user (uid, gid, additionalGids, umask)/capabilities/rlimits/
noNewPrivileges/oomScoreAdj, process.terminal only false; root.path/readonly; hostname; domainname;
mounts[] (destination, type, source, options); linux.namespaces (type, path), uidMappings, gidMappings,
maskedPaths, readonlyPaths, rootfsPropagation, sysctl, timeOffsets, cgroupsPath, and resources memory
(limit, reservation, swap), pids, cpu (shares, quota, period, cpus, mems) and unified (cglimits.py).

Each failure is a `ConfigError` that names the field (specread.py): a value of the wrong type, and what
the spec says MUST be an error, here config.md § POSIX process: args "at least one entry is REQUIRED",
cwd "MUST be an absolute path", mounts[].destination "MUST be an absolute path"; the `linux` object's
rules (namespaces, mappings, paths, sysctls) are in speclinux.py.

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

from conformance.ref.credentials import CAPABILITIES, RLIMITS
from conformance.ref.defaultspec import default_config
from conformance.ref.mountopts import MountFlags, parse_options
from conformance.ref.speclinux import (
    NAMESPACE_FLAGS,
    NS_FILES,
    IdMapping,
    Linux,
    Namespace,
    check_namespaces,
    parse_linux,
    sysctl_namespace,
)
from conformance.ref.specread import (
    ConfigError,
    absolute,
    array,
    boolean,
    integer,
    lookup,
    obj,
    opt_string,
    string,
    strings,
)

#: Accepted and not applied. Each is harmless here because the project writes its bundles itself and
#: checks namespaces, mounts, credentials and the cgroup limits below, which none of these change.
IGNORED: dict[str, str] = {
    "annotations": "free-form metadata (config.md § Annotations)",
    "linux.resources.devices": "no device cgroup: the container has the devices its /dev gives it (runc spec's "
                               "deny-all rule is accepted for that reason)",
    "linux.resources.blockIO": "no I/O weight or throttling",
    "linux.resources.hugepageLimits": "no hugetlb limits",
    "linux.resources.network": "no net_cls class id or net_prio priorities",
    "linux.resources.rdma": "no RDMA limits",
    "linux.resources.memory.kernel": "no kernel memory limit (NOT RECOMMENDED by the spec; gone from v2)",
    "linux.resources.memory.kernelTCP": "no kernel TCP buffer limit (NOT RECOMMENDED by the spec; gone from v2)",
    "linux.resources.memory.swappiness": "the swappiness stays the host's",
    "linux.resources.memory.disableOOMKiller": "the OOM killer stays on",
    "linux.resources.memory.useHierarchy": "the hierarchy setting stays the host's",
    "linux.resources.memory.checkBeforeUpdate": "only for updates, which this runtime does not make",
    "linux.resources.cpu.realtimeRuntime": "no real-time bandwidth (cgroup v1 only)",
    "linux.resources.cpu.realtimePeriod": "no real-time bandwidth (cgroup v1 only)",
    "linux.resources.cpu.burst": "no CFS burst",
    "linux.resources.cpu.idle": "no SCHED_IDLE cgroup",
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
        return self.linux.namespace(kind)


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
    top = obj(doc, "(the document)")
    version = string(top.get("ociVersion"), "ociVersion")
    if version.split(".")[0] != "1":
        raise ConfigError("ociVersion", f"{version!r}: this runtime implements runtime-spec 1.x")
    for field, why in REFUSED.items():
        value = lookup(top, field)
        if value not in (None, False, [], {}):
            raise ConfigError(field, f"not supported by the reference runtime: {why}")
    process = _process(obj(top.get("process"), "process"))
    root = obj(top.get("root"), "root")
    root_path = os.path.realpath(os.path.join(bundle, string(root.get("path"), "root.path")))
    if not os.path.isdir(root_path):
        raise ConfigError("root.path", f"{root_path} is not a directory")
    linux = parse_linux(obj(top.get("linux", {}), "linux"))
    mounts = tuple(_mount(obj(m, f"mounts[{n}]"), f"mounts[{n}]")
                   for n, m in enumerate(array(top.get("mounts", []), "mounts")))
    spec = Spec(version, process, root_path, boolean(root.get("readonly", False), "root.readonly"),
                opt_string(top.get("hostname"), "hostname"), opt_string(top.get("domainname"), "domainname"),
                mounts, linux, tuple(f for f in IGNORED if lookup(top, f) is not None))
    check_namespaces(linux, spec.hostname, spec.domainname)
    return spec


def _process(doc: Mapping[str, Any]) -> Process:
    args = strings(doc.get("args"), "process.args")
    if not args:
        raise ConfigError("process.args", "empty: at least one entry (the program) is required")
    cwd = absolute(doc.get("cwd"), "process.cwd")
    env = strings(doc.get("env", []), "process.env")
    for n, item in enumerate(env):
        if "=" not in item:
            raise ConfigError(f"process.env[{n}]", f"{item!r} is not KEY=value")
    user = obj(doc.get("user"), "process.user")
    umask = user.get("umask")
    users = User(integer(user.get("uid"), "process.user.uid"), integer(user.get("gid"), "process.user.gid"),
                 tuple(integer(g, f"process.user.additionalGids[{n}]")
                       for n, g in enumerate(array(user.get("additionalGids", []), "process.user.additionalGids"))),
                 None if umask is None else integer(umask, "process.user.umask"))
    caps = None
    if doc.get("capabilities") is not None:
        found = obj(doc["capabilities"], "process.capabilities")
        sets = {}
        for kind in ("bounding", "effective", "inheritable", "permitted", "ambient"):
            names = strings(found.get(kind, []), f"process.capabilities.{kind}")
            for name in names:
                if name not in CAPABILITIES:
                    raise ConfigError(f"process.capabilities.{kind}", f"unknown capability {name!r} "
                                      "(capabilities(7) names, like CAP_KILL)")
            sets[kind] = names
        caps = Capabilities(**sets)
    rlimits = []
    for n, item in enumerate(array(doc.get("rlimits", []), "process.rlimits")):
        where = f"process.rlimits[{n}]"
        limit = obj(item, where)
        kind = string(limit.get("type"), f"{where}.type")
        if kind not in RLIMITS:
            raise ConfigError(f"{where}.type", f"unknown rlimit {kind!r} (getrlimit(2) names, like RLIMIT_NOFILE)")
        rlimits.append(Rlimit(kind, integer(limit.get("soft"), f"{where}.soft"),
                              integer(limit.get("hard"), f"{where}.hard")))
    oom = doc.get("oomScoreAdj")
    return Process(args, env, cwd, users, caps, tuple(rlimits),
                   boolean(doc.get("noNewPrivileges", False), "process.noNewPrivileges"),
                   None if oom is None else integer(oom, "process.oomScoreAdj", minimum=-1000))


def _mount(doc: Mapping[str, Any], where: str) -> Mount:
    destination = absolute(doc.get("destination"), f"{where}.destination")
    kind = opt_string(doc.get("type"), f"{where}.type")
    source = opt_string(doc.get("source"), f"{where}.source")
    options = strings(doc.get("options", []), f"{where}.options")
    flags = parse_options(options, kind)
    if flags.bind and not source:
        raise ConfigError(f"{where}.source", "a bind mount needs a source")
    if kind in ("cgroup", "cgroup2"):
        raise ConfigError(f"{where}.type", f"{kind!r} on {destination}: cgroup filesystems are not mounted by the "
                          "reference runtime yet; leave the mount out")
    return Mount(destination, kind, source, options, flags)


__all__ = ["IGNORED", "NAMESPACE_FLAGS", "NS_FILES", "REFUSED", "Capabilities", "ConfigError", "IdMapping", "Linux",
           "Mount", "Namespace", "Process", "Rlimit", "Spec", "User", "default_config", "load_bundle",
           "parse_config", "sysctl_namespace"]
