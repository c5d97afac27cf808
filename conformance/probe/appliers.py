"""Who applies layers in a probe: the reference implementation, or a real tool on this host.

Every layer scenario asks the same question of each implementation: here are layer blobs, base first;
what rootfs do you make of them? The reference applies them with conformance/ref. The tools get the
blobs in the form they read (an OCI image layout for umoci and podman, a docker-archive for docker),
byte for byte as the scenario built them, and their result is read back as a plain directory:
`umoci unpack`'s rootfs, or the tar that `docker export` / `podman export` stream of a created (never
started) container, unpacked by GNU tar. Images, containers and storage are named `conformance-...`
and removed by the sandbox's undo steps, even when the scenario fails.

A tool that refuses the input raises ApplyRefused with the tool's own words; the probe's scenario
decides whether refusing was right. Knobs that only the reference has (size limits, the devices
policy) are ignored by the tools.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from conformance.probe.actions import Context, NotApplicable

#: The tag every image gets: tools need one, and one name keeps cleanup simple.
TAG = "conformance"
TOOL_TIMEOUT = 120.0
DOCKER_SOCKETS = ("/run/container-conformance/docker.sock", "/run/docker.sock", "/var/run/docker.sock")


class ApplyRefused(Exception):
    """The implementation refused the layers: its own message, and which layer when it said."""

    def __init__(self, message: str, layer: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.layer = layer


@dataclass(frozen=True, slots=True)
class LayerBlob:
    """A layer exactly as the image carries it: bytes and media type."""

    data: bytes
    media_type: str


class Applier(Protocol):
    """Applies layer blobs, base first, into a fresh rootfs under a work dir it owns."""

    name: ClassVar[str]

    def apply(self, blobs: Sequence[LayerBlob], workdir: str, config: Mapping[str, Any] | None = None) -> str:
        """The rootfs dir made under workdir; raises ApplyRefused when the implementation refused.

        config overrides top-level keys of the image's config (a wrong rootfs, to test that it is
        caught); the reference applies blob by blob and reads no config (its image path, ref.image, does).
        """
        ...


def applier_for(ctx: Context, options: Mapping[str, Any] | None = None) -> Applier:
    """The applier of ctx.implementation; options are reference-only knobs (ApplyOptions fields)."""
    kinds: dict[str, type[Applier]] = {"ref": RefApplier, "umoci": UmociApplier, "docker": DockerApplier,
                                       "podman": PodmanApplier}
    if ctx.implementation not in kinds:
        raise NotApplicable(f"{ctx.implementation} does not apply layers")
    if ctx.implementation == "ref":
        return RefApplier(ctx, options or {})
    return kinds[ctx.implementation](ctx, {})  # type: ignore[call-arg]


def ref_faults(ctx: Context) -> frozenset[str]:
    """The reference's fault behaviours for ctx.fault (see layer_checks.FAULT_BEHAVIOURS)."""
    from conformance.probe.layer_checks import FAULT_BEHAVIOURS  # noqa: PLC0415  (layer_checks imports us)

    behaviour = FAULT_BEHAVIOURS.get(ctx.fault or "")
    return frozenset({behaviour}) if behaviour else frozenset()


def diff_id_of(blob: LayerBlob) -> str:
    """The DiffID a well-meaning image would record: sha256 of the uncompressed tar.

    Hostile blobs may not decompress; then the blob's own digest stands in, and the tool under test
    meets the broken bytes (which is the point of the scenario).
    """
    data = blob.data
    if blob.media_type.endswith("+gzip"):
        with contextlib.suppress(OSError, EOFError, zlib.error):
            data = gzip.decompress(blob.data)
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def config_document(blobs: Sequence[LayerBlob], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The image config a scenario's layers get; overrides replace top-level keys (e.g. a wrong rootfs)."""
    doc: dict[str, Any] = {"architecture": _go_arch(), "os": "linux", "config": {"Cmd": ["/conformance-never-run"]},
                           "rootfs": {"type": "layers", "diff_ids": [diff_id_of(blob) for blob in blobs]},
                           "history": [{"created_by": f"conformance layer {n}"} for n in range(len(blobs))]}
    doc.update(overrides or {})
    return doc


def write_layout(path: str, blobs: Sequence[LayerBlob], config: Mapping[str, Any] | None = None) -> str:
    """An OCI image layout of the blobs, named TAG, with config_document(blobs, config); returns the path."""
    from conformance.ref.layout import Layout, write_layout  # noqa: PLC0415
    from conformance.ref.oci import CONFIG, MANIFEST, REF_NAME, Descriptor, Manifest  # noqa: PLC0415

    layout = Layout.create(path)
    layers = tuple(layout.add_blob(blob.data, blob.media_type) for blob in blobs)
    config_descriptor = layout.add_json(config_document(blobs, config), CONFIG)
    manifest = layout.add_json(Manifest(config_descriptor, layers).to_json(), MANIFEST)
    write_layout(path, [Descriptor(manifest.media_type, manifest.digest, manifest.size, {REF_NAME: TAG})])
    return path


def run_tool(argv: Sequence[str], *, what: str, env: Mapping[str, str] | None = None,
             stdout: int | None = subprocess.PIPE, timeout: float = TOOL_TIMEOUT,
             layers: int | None = None) -> str:
    """Run a tool; a non-zero exit becomes ApplyRefused carrying the tool's stderr."""
    try:
        done = subprocess.run(list(argv), stdout=stdout, stderr=subprocess.PIPE, timeout=timeout, check=False,
                              env={**os.environ, **(env or {})})
    except FileNotFoundError:
        raise NotApplicable(f"{argv[0]} is not installed on this host") from None
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip()
        raise ApplyRefused(f"{what}: {stderr.splitlines()[-1] if stderr else f'exit {done.returncode}'}", layers)
    return (done.stdout or b"").decode(errors="replace")


#: What an engine adds to every container's filesystem (mount points, resolver files, its marker):
#: taken out of an export unless a layer itself holds the name, deepest first.
ENGINE_ADDITIONS = ("dev/console", "dev/pts", "dev/shm", "dev", "proc", "sys", "run/.containerenv", "run",
                    "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab", "etc", ".dockerenv", ".containerenv")


def layer_names(blobs: Sequence[LayerBlob]) -> set[str]:
    """Every entry name (and its parents) that the layers carry, as far as they can be read."""
    names: set[str] = set()
    for blob in blobs:
        data = blob.data
        with contextlib.suppress(OSError, EOFError, zlib.error, tarfile.TarError):
            if blob.media_type.endswith("+gzip"):
                data = gzip.decompress(data)
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                for member in tar:
                    parts = [p for p in member.name.split("/") if p not in ("", ".")]
                    names.update("/".join(parts[:n]) for n in range(1, len(parts) + 1))
    return names


def prune_engine_additions(rootfs: str, blobs: Sequence[LayerBlob]) -> None:
    """Remove what the engine added to an export and no layer holds; a directory only when emptied."""
    carried = layer_names(blobs)
    for name in ENGINE_ADDITIONS:
        path = os.path.join(rootfs, name)
        if name in carried or not os.path.lexists(path):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            with contextlib.suppress(OSError):
                os.rmdir(path)  # only when empty: a layer's own children keep it
        else:
            os.unlink(path)


def untar(stream_argv: Sequence[str], rootfs: str, *, env: Mapping[str, str] | None = None) -> None:
    """Pipe a tool's tar stream (an export) into GNU tar, keeping owners, modes and xattrs."""
    os.makedirs(rootfs, exist_ok=True)
    with subprocess.Popen(list(stream_argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={**os.environ, **(env or {})}) as producer:
        done = subprocess.run(["tar", "-x", "-p", "--numeric-owner", "--xattrs", "--xattrs-include=*",
                               "-C", rootfs], stdin=producer.stdout, capture_output=True, timeout=TOOL_TIMEOUT,
                              check=False)
        if producer.stdout is not None:
            producer.stdout.close()
        err = producer.stderr.read().decode(errors="replace").strip() if producer.stderr else ""
        producer.wait(timeout=TOOL_TIMEOUT)
    if producer.returncode != 0:
        raise ApplyRefused(f"{stream_argv[0]} export: {err or f'exit {producer.returncode}'}")
    if done.returncode != 0:
        raise RuntimeError(f"tar -x of {stream_argv[0]}'s export failed: {done.stderr.decode(errors='replace')}")


class RefApplier:
    """conformance/ref, with the faulty variant of ctx.fault."""

    name: ClassVar[str] = "ref"

    def __init__(self, ctx: Context, options: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.options = dict(options)

    def apply(self, blobs: Sequence[LayerBlob], workdir: str, config: Mapping[str, Any] | None = None) -> str:
        """Each blob through ref's apply_layer, as layer<n>."""
        from conformance.ref.layers import ApplyOptions, apply_layer  # noqa: PLC0415

        rootfs = os.path.join(workdir, "rootfs")
        os.makedirs(rootfs, mode=0o755)
        options = ApplyOptions(faults=ref_faults(self.ctx), **self.options)
        for n, blob in enumerate(blobs):
            try:
                apply_layer(rootfs, blob.data, media_type=blob.media_type, options=options, label=f"layer{n}")
            except Exception as exc:  # the reference's refusals are all exceptions with a message
                raise ApplyRefused(str(exc), n) from exc
        return rootfs


class UmociApplier:
    """`umoci unpack` of an OCI layout holding the blobs (rootfs in the bundle it makes)."""

    name: ClassVar[str] = "umoci"

    def __init__(self, ctx: Context, _options: Mapping[str, Any]) -> None:
        self.ctx = ctx

    def apply(self, blobs: Sequence[LayerBlob], workdir: str, config: Mapping[str, Any] | None = None) -> str:
        """Layout, then unpack; umoci checks digests and DiffIDs itself."""
        return self.read(write_layout(os.path.join(workdir, "layout"), blobs, config), workdir)

    def read(self, layout: str, workdir: str) -> str:
        """Unpack the layout's image TAG into a bundle; its rootfs."""
        if shutil.which("umoci") is None:
            raise NotApplicable("umoci is not installed on this host")
        bundle = os.path.join(workdir, "bundle")
        run_tool(["umoci", "unpack", "--image", f"{layout}:{TAG}", bundle], what="umoci unpack")
        return os.path.join(bundle, "rootfs")


def docker_cli() -> tuple[str, dict[str, str]]:
    """The docker client and DOCKER_HOST that reach a daemon here, or NotApplicable saying why.

    /usr/bin/docker is Debian's client of Debian's daemon; a newer client on PATH may speak an API the
    daemon is too old for, so each candidate is asked for the server's version.
    """
    sockets = [s for s in DOCKER_SOCKETS if os.path.exists(s)]
    clients = [c for c in dict.fromkeys(["/usr/bin/docker", shutil.which("docker") or ""]) if c and os.path.exists(c)]
    for socket in sockets:
        for client in clients:
            env = {"DOCKER_HOST": f"unix://{socket}"}
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                done = subprocess.run([client, "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                      timeout=20, check=False, env={**os.environ, **env})
                if done.returncode == 0 and done.stdout.strip():
                    return client, env
    if not clients:
        raise NotApplicable("no docker client is installed on this host")
    raise NotApplicable(f"no docker daemon answers on {', '.join(sockets) or 'any known socket'} "
                        "(provision the host: playbooks/site.yml starts one)")


def write_docker_archive(path: str, blobs: Sequence[LayerBlob], repo_tag: str,
                         config: Mapping[str, Any] | None = None) -> str:
    """A `docker save`-style archive: manifest.json, the config, each blob as <n>/layer.tar as-is.

    Docker 20.10's `load` reads this format (not an OCI layout) and sniffs each layer's compression,
    so gzip blobs go in unchanged and docker meets exactly the scenario's bytes.
    """
    document = json.dumps(config_document(blobs, config), sort_keys=True).encode()
    config_name = f"{hashlib.sha256(document).hexdigest()}.json"
    members: list[tuple[str, bytes]] = [(config_name, document)]
    for n, blob in enumerate(blobs):
        members.append((f"{n}/layer.tar", blob.data))
    layers = [f"{n}/layer.tar" for n in range(len(blobs))]
    manifest = [{"Config": config_name, "RepoTags": [repo_tag], "Layers": layers}]
    members.append(("manifest.json", json.dumps(manifest).encode()))
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, _BytesReader(data))
    return path


class _BytesReader:
    """A minimal file object for tarfile.addfile (io.BytesIO would do; this avoids a copy of big blobs)."""

    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)
        self.offset = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.view) if size < 0 else min(len(self.view), self.offset + size)
        chunk = bytes(self.view[self.offset:end])
        self.offset = end
        return chunk


def _go_arch() -> str:
    from conformance.ref.layout import host_architecture  # noqa: PLC0415

    return host_architecture()


@dataclass(frozen=True)
class DockerSession:
    """An image this probe loaded into the docker daemon; it and its containers go with the sandbox."""

    ctx: Context
    client: str
    env: dict[str, str]
    name: str  # of the image's repository and of its one container

    @property
    def image(self) -> str:
        """The image reference."""
        return f"{self.name}:{TAG}"

    @classmethod
    def load(cls, ctx: Context, blobs: Sequence[LayerBlob], workdir: str,
             config: Mapping[str, Any] | None = None) -> DockerSession:
        """`docker load` of the blobs as a docker-archive, named after the sandbox (one name per load)."""
        client, env = docker_cli()
        session = cls(ctx, client, env, f"{os.path.basename(ctx.sandbox.root).lower()}-{os.urandom(2).hex()}")
        archive = write_docker_archive(os.path.join(workdir, "image.tar"), blobs, session.image, config)
        ctx.sandbox.defer(f"docker rmi {session.image}", lambda: quiet([client, "rmi", "-f", session.image], env))
        session.run("load", "-i", archive, what="docker load")
        return session

    def run(self, *args: str, what: str) -> str:
        """A docker command against this daemon; a failure is ApplyRefused with docker's words."""
        return run_tool([self.client, *args], what=what, env=self.env)

    def create(self) -> Mapping[str, Any]:
        """`docker create` (never started) of the image; the container's GraphDriver."""
        self.ctx.sandbox.defer(f"docker rm {self.name}", lambda: quiet([self.client, "rm", "-f", self.name], self.env))
        self.run("create", "--name", self.name, "--network", "none", self.image, what="docker create")
        graph: Mapping[str, Any] = json.loads(self.run("inspect", "--format", "{{json .GraphDriver}}", self.name,
                                                       what="docker inspect"))
        return graph

    def rootfs(self, blobs: Sequence[LayerBlob], rootfs: str) -> str:
        """What `docker start` would mount for a container of the image, copied to rootfs.

        `docker export` would be simpler but it writes no xattrs at all, so it shows less than a
        container sees; instead the container's own overlay (GraphDriver LowerDir, UpperDir) is
        mounted read-only in the sandbox, stacked as the daemon stacks it, and copied out.
        """
        graph = self.create()
        # The mount point sits outside rootfs's parent: the hostile checks watch it for any change.
        copy_overlay(self.ctx, graph, self.ctx.sandbox.path(f"docker-view-{os.urandom(3).hex()}"), rootfs)
        prune_engine_additions(rootfs, blobs)
        return rootfs


class DockerApplier:
    """docker load of a docker-archive, docker create, and the container's overlay read back."""

    name: ClassVar[str] = "docker"

    def __init__(self, ctx: Context, _options: Mapping[str, Any]) -> None:
        self.ctx = ctx

    def apply(self, blobs: Sequence[LayerBlob], workdir: str, config: Mapping[str, Any] | None = None) -> str:
        """Load, create (never start), copy the container's filesystem into workdir/rootfs."""
        session = DockerSession.load(self.ctx, blobs, workdir, config)
        return session.rootfs(blobs, os.path.join(workdir, "rootfs"))


def copy_overlay(ctx: Context, graph: Mapping[str, Any], view: str, rootfs: str) -> None:
    """Mount a container's layers (inspect's GraphDriver) read-only at view and copy them to rootfs."""
    from conformance.probe import syscalls  # noqa: PLC0415

    data = graph.get("Data") or {}
    if graph.get("Name") not in ("overlay2", "overlay") or not data.get("UpperDir"):
        raise NotApplicable(f"the storage driver is {graph.get('Name')!r}, not overlay")
    # Docker's "<id>-init" layer holds empty /etc/hosts, /etc/resolv.conf... that it bind-mounts over at
    # start; it is the engine's, not the image's, and would shadow the image's own files of those names.
    lowers = ":".join(path for path in [data["UpperDir"], *(data.get("LowerDir") or "").split(":")]
                      if path and not path.endswith("-init/diff"))
    os.mkdir(view)
    syscalls.mount("overlay", view, "overlay", syscalls.MS_RDONLY, f"lowerdir={lowers}")
    try:
        done = subprocess.run(["cp", "-a", f"{view}/.", rootfs], capture_output=True, text=True,
                              timeout=TOOL_TIMEOUT, check=False)
        if done.returncode != 0:  # e.g. a name the merged view lists but cannot stat: what it could copy stands
            with open(ctx.sandbox.path("docker-copy-errors.txt"), "a", encoding="utf-8") as log:
                log.write(done.stderr)
    finally:
        syscalls.umount(view, syscalls.MNT_DETACH)


def quiet(argv: list[str], env: Mapping[str, str] | None = None) -> None:
    """A cleanup command whose failure (nothing left to remove) does not matter."""
    subprocess.run(argv, capture_output=True, timeout=TOOL_TIMEOUT, check=False, env={**os.environ, **(env or {})})


@dataclass(frozen=True)
class PodmanSession:
    """An image pulled into a podman store private to the sandbox (removed with it)."""

    ctx: Context
    argv: list[str]
    image_id: str

    @classmethod
    def pull(cls, ctx: Context, layout: str, workdir: str) -> PodmanSession:
        """`podman pull oci:<layout>:TAG` into a store under workdir."""
        if shutil.which("podman") is None:
            raise NotApplicable("podman is not installed on this host")
        argv = podman_argv(workdir, podman_runroot(ctx))
        ctx.sandbox.defer("podman system reset", lambda: quiet([*argv, "system", "reset", "--force"]))
        image_id = run_tool([*argv, "pull", "-q", f"oci:{layout}:{TAG}"], what="podman pull").strip()
        return cls(ctx, argv, image_id)

    def run(self, *args: str, what: str) -> str:
        """A podman command on this store; a failure is ApplyRefused with podman's words."""
        return run_tool([*self.argv, *args], what=what)

    def rootfs(self, rootfs: str) -> str:
        """`podman create` (never started) and `podman export` of it into rootfs (podman keeps xattrs)."""
        name = os.path.basename(self.ctx.sandbox.root).lower()
        self.run("create", "--name", name, "--network", "none", self.image_id, what="podman create")
        untar([*self.argv, "export", name], rootfs)
        return rootfs


class PodmanApplier:
    """podman pull from an OCI layout into a private store, podman create, podman export.

    The store (--root, --runroot) lives in the sandbox, so the host's own images are never touched and
    the whole store goes with the sandbox; --storage-driver overlay is what podman uses on real hosts.
    """

    name: ClassVar[str] = "podman"

    def __init__(self, ctx: Context, _options: Mapping[str, Any]) -> None:
        self.ctx = ctx

    def apply(self, blobs: Sequence[LayerBlob], workdir: str, config: Mapping[str, Any] | None = None) -> str:
        """Pull, create (never start), export into workdir/rootfs; the store is reset after."""
        layout = write_layout(os.path.join(workdir, "layout"), blobs, config)
        rootfs = self.read(layout, workdir)
        prune_engine_additions(rootfs, blobs)
        return rootfs

    def read(self, layout: str, workdir: str) -> str:
        """Pull the layout's image TAG, create a container of it and export it; the exported rootfs."""
        return PodmanSession.pull(self.ctx, layout, workdir).rootfs(os.path.join(workdir, "rootfs"))


def podman_runroot(ctx: Context) -> str:
    """A new directory for one store's --runroot, at the top of the sandbox.

    podman refuses a runroot longer than 50 characters, and the sandbox's own path already carries the
    run's and the host's ids (/tmp/conformance-<run>-<host>-<random>: about 40), so the runroot cannot
    sit deeper, beside the store.
    """
    for tag in "0123456789abcdefghijklmnopqrstuvwxyz":  # one character: a 16-character run id leaves 3
        path = ctx.sandbox.path(f"r{tag}")
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
            return path
    raise RuntimeError(f"no free podman runroot in {ctx.sandbox.root}: 36 podman stores in one scenario")


def podman_argv(workdir: str, runroot: str | None = None) -> list[str]:
    """Run podman with a private store under workdir, its runroot too unless given (see podman_runroot).

    cgroupfs and file events, since PID 1 may not be systemd.
    """
    store = os.path.join(workdir, "podman")
    return ["podman", "--root", os.path.join(store, "root"), "--runroot", runroot or os.path.join(store, "run"),
            "--storage-driver", "overlay", "--runtime", "runc", "--cgroup-manager", "cgroupfs",
            "--events-backend", "file", "--tmpdir", os.path.join(store, "tmp")]


class SkopeoReader:
    """`skopeo copy` of a layout's image into another layout: it reads (and verifies) every blob."""

    name: ClassVar[str] = "skopeo"

    def __init__(self, ctx: Context, _options: Mapping[str, Any]) -> None:
        self.ctx = ctx

    def read(self, layout: str, workdir: str) -> str:
        """Copy to workdir/copy; returns the copy (a layout, not a rootfs: skopeo does not unpack)."""
        if shutil.which("skopeo") is None:
            raise NotApplicable("skopeo is not installed on this host")
        copy = os.path.join(workdir, "copy")
        run_tool(["skopeo", "copy", "--quiet", f"oci:{layout}:{TAG}", f"oci:{copy}:{TAG}"], what="skopeo copy")
        return copy


class LayoutReader(Protocol):
    """Reads an image from an OCI layout as a whole (descriptors, digests, sizes), as a tool does."""

    name: ClassVar[str]

    def read(self, layout: str, workdir: str) -> str:
        """What the tool made of the image (a rootfs or a copy); ApplyRefused when it refused."""
        ...


def reader_for(ctx: Context) -> LayoutReader:
    """The tool of ctx.implementation as a layout reader (ref reads layouts in layer_checks itself)."""
    kinds: dict[str, type[LayoutReader]] = {"umoci": UmociApplier, "podman": PodmanApplier, "skopeo": SkopeoReader}
    if ctx.implementation not in kinds:
        raise NotApplicable(f"{ctx.implementation} does not read OCI image layouts "
                            "(docker 20.10 loads docker-archives, which carry no descriptors)")
    return kinds[ctx.implementation](ctx, {})  # type: ignore[call-arg]
