"""How each runtime is started on one container: the same busybox rootfs, the same script, its own way in.

runc, crun and the reference runtime get one OCI bundle (config.json written from conformance.ref.runspec's
default_config, then the scenario's namespaces, maps, hostname and the /chan bind mount); podman and
docker get the same rootfs imported as an image and the namespaces through their flags. Each runner
only starts the container as a child process (so the probe can act on the host while it runs) and says
how to stop it; conformance/probe/ns_checks.py does the rest the same way for all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from conformance import PREFIX
from conformance.probe.actions import Context, NotApplicable
from conformance.probe.appliers import docker_cli, podman_argv

JsonDict = dict[str, Any]

#: Docker and podman flags per namespace type: (a new one, the host's).
ENGINE_FLAGS: dict[str, tuple[list[str], list[str]]] = {
    "pid": ([], ["--pid", "host"]),
    "network": (["--network", "none"], ["--network", "host"]),
    "ipc": (["--ipc", "private"], ["--ipc", "host"]),
    "uts": ([], ["--uts", "host"]),
    "cgroup": (["--cgroupns", "private"], ["--cgroupns", "host"]),
}


class ConfigRefused(Exception):
    """The runtime refused the container's configuration before running anything (an observation)."""


@dataclass(frozen=True)
class Container:
    """What every runner needs: the rootfs, the channel dir, the script and the isolation asked for."""

    cid: str
    workdir: str  # the scenario's dir in the sandbox: bundle, logs and the engines' stores go here
    rootfs: str
    chan: str
    script: str
    namespaces: tuple[str, ...]
    user_ns: Mapping[str, Any] | None
    hostname: str | None
    domainname: str | None
    readonly_root: bool
    join: Mapping[str, str] | None
    raw_namespaces: Sequence[Mapping[str, str]] | None
    caps: tuple[str, ...] = ()  # capabilities beyond the runtime's defaults, e.g. CAP_SYS_ADMIN to mount
    env: Mapping[str, str] = field(default_factory=dict)
    # The cgroups area: OCI linux.resources (engines get the same as flags), the cgroupsPath the OCI
    # runtimes are given, engine-only flags (--cpus) and extra host dirs bound in (source, destination).
    resources: Mapping[str, Any] | None = None
    cgroups_path: str | None = None
    engine_flags: Mapping[str, str] = field(default_factory=dict)
    binds: tuple[tuple[str, str], ...] = ()


class Runner:
    """One runtime: `start` returns the running child; `stop` makes sure nothing of the container is left."""

    name: ClassVar[str]

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def start(self, box: Container, stdout: int, stderr: int) -> subprocess.Popen[bytes]:
        """Start the container in the foreground; NotApplicable when this runtime cannot do what box asks."""
        raise NotImplementedError

    def stop(self, box: Container) -> None:
        """Kill and remove the container if it is still there (after a timeout or a crash)."""

    def pause(self, box: Container) -> None:
        """Freeze every process of the running container (runc pause, docker pause)."""
        raise NotApplicable(f"{self.name} cannot pause a container")

    def resume(self, box: Container) -> None:
        """Thaw what pause froze."""
        raise NotApplicable(f"{self.name} cannot resume a container")


# --- runc, crun and ref: one OCI bundle -----------------------------------------------------------

def bundle_config(box: Container) -> JsonDict:
    """config.json for box, from the reference's default config (the one `runc spec` would give)."""
    from conformance.ref.defaultspec import default_config  # noqa: PLC0415  (ref loads only for this area)

    maps = [(m[0], m[1], m[2]) for m in (box.user_ns or {}).get("uid", [])]
    config: JsonDict = default_config(["/bin/sh", "-c", box.script], hostname=box.hostname,
                                      namespaces=tuple(box.namespaces) + (("user",) if box.user_ns else ()),
                                      user_ns_maps=maps or None, readonly_root=box.readonly_root)
    linux = config.setdefault("linux", {})
    if box.user_ns:
        linux["uidMappings"] = [{"containerID": a, "hostID": b, "size": c} for a, b, c in box.user_ns["uid"]]
        linux["gidMappings"] = [{"containerID": a, "hostID": b, "size": c} for a, b, c in box.user_ns["gid"]]
    if box.domainname:
        config["domainname"] = box.domainname
    if box.join:
        kind = box.join["type"]
        path = f"/proc/{os.getpid()}/ns/{_ns_file(kind)}"
        linux["namespaces"] = [n for n in linux.get("namespaces", []) if n.get("type") != kind] + [
            {"type": kind, "path": path}]
    if box.raw_namespaces is not None:
        linux["namespaces"] = [dict(n) for n in box.raw_namespaces]
    capabilities = config["process"].setdefault("capabilities", {})
    for kind in ("bounding", "effective", "permitted"):
        capabilities[kind] = sorted({*capabilities.get(kind, []), *box.caps})
    config["process"]["env"] = [*config["process"].get("env", []), *(f"{k}={v}" for k, v in box.env.items())]
    # Private both ways (NS-MNT-001/002): runc's default for an unset rootfsPropagation is rslave, which
    # lets host mounts in; the tests ask for what docker and podman do by default.
    linux["rootfsPropagation"] = "private"
    config["mounts"] = [*config.get("mounts", []), {"destination": "/chan", "type": "bind", "source": box.chan,
                                                     "options": ["rbind", "rw", "rprivate"]}]
    config["mounts"] += [{"destination": dst, "type": "bind", "source": src, "options": ["rbind", "rw", "rprivate"]}
                         for src, dst in box.binds]
    if box.cgroups_path:
        linux["cgroupsPath"] = box.cgroups_path
    if box.resources:
        linux["resources"] = {**(linux.get("resources") or {}), **box.resources}
    return config


def _ns_file(kind: str) -> str:
    """The /proc/<pid>/ns entry of a runtime-spec namespace type."""
    return {"network": "net", "mount": "mnt"}.get(kind, kind)


def write_bundle(box: Container) -> str:
    """The bundle dir: config.json beside a rootfs symlink-free path (root.path is absolute)."""
    bundle = os.path.join(box.workdir, "bundle")
    os.makedirs(bundle, exist_ok=True)
    config = bundle_config(box)
    config["root"]["path"] = box.rootfs
    with open(os.path.join(bundle, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=1)
    return bundle


class OciRunner(Runner):
    """runc or crun: `run --bundle B ID`, in the foreground; `delete --force ID` after."""

    tool: ClassVar[str]

    def start(self, box: Container, stdout: int, stderr: int) -> subprocess.Popen[bytes]:
        """`TOOL run --bundle`: the bundle is written from box first."""
        if shutil.which(self.tool) is None:
            raise NotApplicable(f"{self.tool} is not installed on this host")
        if box.engine_flags:
            raise NotApplicable(f"{self.tool} takes a config.json: {', '.join(box.engine_flags)} are engine flags")
        bundle = write_bundle(box)
        self.ctx.sandbox.defer(f"{self.tool} delete {box.cid}", lambda: self.stop(box))
        return subprocess.Popen([self.tool, "run", "--bundle", bundle, box.cid], stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=stderr)

    def stop(self, box: Container) -> None:
        """`delete --force`: kills what is left and removes the container's state."""
        subprocess.run([self.tool, "delete", "--force", box.cid], capture_output=True, timeout=30, check=False)

    def pause(self, box: Container) -> None:
        """`TOOL pause ID`."""
        _tool([self.tool, "pause", box.cid])

    def resume(self, box: Container) -> None:
        """`TOOL resume ID`."""
        _tool([self.tool, "resume", box.cid])


def _tool(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.decode(errors='replace').strip()[-500:]}")


class RuncRunner(OciRunner):
    """runc, the OCI reference runtime."""

    name: ClassVar[str] = "runc"
    tool: ClassVar[str] = "runc"


class CrunRunner(OciRunner):
    """crun, the C runtime: the same bundle as runc."""

    name: ClassVar[str] = "crun"
    tool: ClassVar[str] = "crun"


class RefRunner(Runner):
    """The reference runtime, in a child python3 that calls run_bundle with the fault under test."""

    name: ClassVar[str] = "ref"

    def faults(self) -> frozenset[str]:
        """The runtime behaviour the clause under test gets wrong, from the namespaces or cgroups table."""
        from conformance.probe.cg_faults import CG_BEHAVIOURS  # noqa: PLC0415
        from conformance.probe.ns_faults import FAULT_BEHAVIOURS  # noqa: PLC0415

        fault = self.ctx.fault or ""
        behaviour = FAULT_BEHAVIOURS.get(fault) or CG_BEHAVIOURS.get(fault)
        return frozenset([behaviour] if behaviour else [])

    def start(self, box: Container, stdout: int, stderr: int) -> subprocess.Popen[bytes]:
        """A child interpreter, so the probe keeps watching the host while the container runs."""
        if box.engine_flags:
            box = _with_engine_flags(box, self.faults())
        bundle = write_bundle(box)
        # The probe runs from a zip (sys.path[0]); the child imports the runtime from the same place.
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from conformance.ref.runtime import run_bundle; "
                "sys.exit(run_bundle(sys.argv[2], sys.argv[3], faults=frozenset(sys.argv[4:])))")
        argv = [sys.executable, "-S", "-c", code, sys.path[0], bundle, box.cid, *sorted(self.faults())]
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)

    def _cgroup(self, box: Container) -> Any:
        from conformance.ref.cgmanager import ContainerCgroup, detect_layout  # noqa: PLC0415

        if not box.cgroups_path:
            raise NotApplicable("the reference runtime makes a cgroup only for a cgroupsPath or resources")
        return ContainerCgroup.open(detect_layout(), box.cgroups_path, faults=self.faults())

    def pause(self, box: Container) -> None:
        """The reference manager's freeze of the container's cgroup (what a `pause` command would call)."""
        self._cgroup(box).freeze()

    def resume(self, box: Container) -> None:
        """The reference manager's thaw."""
        self._cgroup(box).thaw()


def _with_engine_flags(box: Container, faults: frozenset[str]) -> Container:
    """Box with its engine flags (--cpus) turned into resources by the reference's own conversion."""
    import dataclasses  # noqa: PLC0415

    from conformance.ref.runflags import resources_from_flags  # noqa: PLC0415

    added = resources_from_flags(dict(box.engine_flags))
    merged: dict[str, Any] = {key: dict(value) if isinstance(value, Mapping) else value
                              for key, value in (box.resources or {}).items()}
    for key, value in added.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, Mapping) else value
    return dataclasses.replace(box, resources=merged, engine_flags={})


# --- docker and podman: an image imported from the rootfs ---------------------------------------------

class EngineRunner(Runner):
    """docker or podman run of the rootfs imported as an image; namespaces through their flags."""

    def argv(self, box: Container) -> tuple[list[str], dict[str, str]]:
        """The engine's command line prefix and environment."""
        raise NotImplementedError

    def user_flags(self, box: Container) -> list[str]:
        """The flags of a user namespace with box's maps, or NotApplicable."""
        raise NotImplementedError

    def run_flags(self) -> list[str]:
        """Flags every `run` of this engine needs on this kind of host."""
        return []

    def start(self, box: Container, stdout: int, stderr: int) -> subprocess.Popen[bytes]:
        """Import the rootfs as an image (removed with the sandbox), then `run --rm` with box's flags."""
        if box.raw_namespaces is not None:
            raise NotApplicable(f"{self.name} takes no config.json: its namespaces are flags")
        if "mount" not in box.namespaces:
            raise NotApplicable(f"{self.name} always gives a container its own mount namespace")
        if box.join and box.join["type"] not in ENGINE_FLAGS:
            raise NotApplicable(f"{self.name} cannot join a {box.join['type']} namespace by path")
        argv, env = self.argv(box)
        image = f"{PREFIX}{self.ctx.sandbox.run_id}-busybox:latest"
        _engine(argv, env, "import", box.rootfs + ".tar", image)

        def remove_image() -> None:
            _engine(argv, env, "rmi", "--force", image, check=False)

        self.ctx.sandbox.defer(f"{self.name} rmi {image}", remove_image)
        flags = ["--name", box.cid, "--rm", "-v", f"{box.chan}:/chan", *self.run_flags()]
        for kind, (new, host) in ENGINE_FLAGS.items():
            joined = box.join is not None and box.join["type"] == kind
            flags += host if kind not in box.namespaces or joined else new
        flags += [f"--env={k}={v}" for k, v in box.env.items()]
        if box.hostname:
            flags += ["--hostname", box.hostname]
        if box.domainname:
            flags += ["--domainname", box.domainname]
        if box.readonly_root:
            flags += ["--read-only"]
        flags += [f"--cap-add={cap.removeprefix('CAP_')}" for cap in box.caps]
        if box.user_ns:
            flags += self.user_flags(box)
        flags += [f"--volume={src}:{dst}" for src, dst in box.binds]
        flags += resource_flags(box.resources or {}, self.name) + [f"--{k}={v}" for k, v in box.engine_flags.items()]
        self.ctx.sandbox.defer(f"{self.name} rm {box.cid}", lambda: self.stop(box))
        return subprocess.Popen([*argv, "run", *flags, image, "/bin/sh", "-c", box.script],
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env={**os.environ, **env})

    def stop(self, box: Container) -> None:
        """`rm --force`: the engine kills and removes the container."""
        argv, env = self.argv(box)
        _engine(argv, env, "rm", "--force", box.cid, check=False)

    def pause(self, box: Container) -> None:
        """`ENGINE pause NAME`."""
        argv, env = self.argv(box)
        _engine(argv, env, "pause", box.cid)

    def resume(self, box: Container) -> None:
        """`ENGINE unpause NAME`."""
        argv, env = self.argv(box)
        _engine(argv, env, "unpause", box.cid)


#: OCI linux.resources fields -> the docker/podman run flag that sets them (the same on both engines).
_RESOURCE_FLAGS: dict[tuple[str, str], str] = {
    ("memory", "limit"): "--memory", ("memory", "reservation"): "--memory-reservation",
    ("memory", "swap"): "--memory-swap", ("pids", "limit"): "--pids-limit",
    ("cpu", "quota"): "--cpu-quota", ("cpu", "period"): "--cpu-period", ("cpu", "shares"): "--cpu-shares",
    ("cpu", "cpus"): "--cpuset-cpus", ("cpu", "mems"): "--cpuset-mems",
}


def resource_flags(resources: Mapping[str, Any], engine: str) -> list[str]:
    """The run flags that ask an engine for resources; NotApplicable for what it has no flag for."""
    flags: list[str] = []
    for group, fields in resources.items():
        if group == "unified":
            if engine != "podman":
                raise NotApplicable(f"{engine} has no flag for cgroup v2 files (resources.unified)")
            flags += [f"--cgroup-conf={key}={value}" for key, value in fields.items()]
            continue
        for name, value in fields.items():
            flag = _RESOURCE_FLAGS.get((group, name))
            if flag is None:
                raise NotApplicable(f"{engine} has no run flag for linux.resources.{group}.{name}")
            flags.append(f"{flag}={value}")
    return flags


def _engine(argv: list[str], env: Mapping[str, str], *args: str, check: bool = True) -> str:
    done = subprocess.run([*argv, *args], capture_output=True, timeout=120, check=False, env={**os.environ, **env})
    if check and done.returncode != 0:
        raise RuntimeError(f"{argv[0]} {args[0]}: {done.stderr.decode(errors='replace').strip()[-500:]}")
    return done.stdout.decode(errors="replace")


class DockerRunner(EngineRunner):
    """docker, through the daemon the provisioning starts."""

    name: ClassVar[str] = "docker"

    def argv(self, box: Container) -> tuple[list[str], dict[str, str]]:
        """The client that reaches a daemon here."""
        client, env = docker_cli()
        return [client], env

    def user_flags(self, box: Container) -> list[str]:
        """Docker has no per-run user namespace."""
        raise NotApplicable("docker's user namespaces are a daemon setting (userns-remap), not a run flag")


class PodmanRunner(EngineRunner):
    """podman with a store private to the sandbox."""

    name: ClassVar[str] = "podman"

    def argv(self, box: Container) -> tuple[list[str], dict[str, str]]:
        """The podman command with its store in the sandbox."""
        if shutil.which("podman") is None:
            raise NotApplicable("podman is not installed on this host")
        # runc (podman_argv): crun refuses hybrid cgroups
        # podman refuses a runroot longer than 50 characters: it sits at the top of the sandbox. The same for
        # every command of the run (this is called for each).
        runroot = self.ctx.sandbox.path("pr")
        os.makedirs(runroot, 0o700, exist_ok=True)
        return [*podman_argv(self.ctx.sandbox.path("p"), runroot), "--log-level", "error"], {}

    def start(self, box: Container, stdout: int, stderr: int) -> subprocess.Popen[bytes]:
        """As the other engine, once podman is known to take every flag box needs."""
        if box.domainname:
            argv, env = self.argv(box)
            if "--domainname" not in _engine(argv, env, "run", "--help"):
                raise NotApplicable("this podman has no --domainname flag: it cannot set a container's NIS domain name")
        return super().start(box, stdout, stderr)

    def run_flags(self) -> list[str]:
        """Explicit ulimits."""
        # without systemd nothing gives podman's containers sane limits: its defaults fail to apply here
        return ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]

    def user_flags(self, box: Container) -> list[str]:
        """--uidmap/--gidmap per range."""
        flags: list[str] = []
        for key, flag in (("uid", "--uidmap"), ("gid", "--gidmap")):
            flags += [f"{flag}={a}:{b}:{c}" for a, b, c in box.user_ns[key]] if box.user_ns else []
        return flags


RUNNERS: dict[str, type[Runner]] = {r.name: r for r in (RefRunner, RuncRunner, CrunRunner, DockerRunner,
                                                         PodmanRunner)}


def runner_for(ctx: Context) -> Runner:
    """The runner of ctx.implementation, or NotApplicable for one that runs no containers."""
    if ctx.implementation not in RUNNERS:
        raise NotApplicable(f"{ctx.implementation} does not run containers")
    return RUNNERS[ctx.implementation](ctx)
