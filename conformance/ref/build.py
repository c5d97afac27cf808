"""Build an OCI image from a Containerfile subset (see containerfile.py), one layer per changing step.

The builder keeps two trees on tmpfs, `before` and `after`, both the rootfs of the image so far. A
step writes into `after` (buildcopy stages what COPY, ADD or WORKDIR put there and the ref applier
writes it), the layer is `diff_trees(before, after)`, and that layer is then applied to `before`, so
the trees agree again and each layer is also checked to reproduce its tree. A cached step applies
its stored layer to both.

A RUN step runs its command in a container whose only image layer is `before` (container.run_layer:
overlay with a fresh upper dir, a bundle for the reference runtime, `/bin/sh -c` for the shell form,
the ENV, WORKDIR and USER so far, no ENTRYPOINT, stdin empty, a network namespace with no interface
but loopback). Its layer is the container's upper dir as `commit.upper_to_layer` writes it, whiteouts
and opaque directories included, as Docker's overlay2 driver exports it; that layer is then applied
to both trees. The command's output goes to this process's stderr, so the CLI's stdout stays the step
table. A status other than 0 fails the build, naming the line and the status.

Choices, where Docker 20.10's classic builder (DOCKER_BUILDKIT=0) and podman 4 (buildah) differ:

- WORKDIR creates its directory when missing, and that is a layer, as in Docker's classic builder;
  an existing directory makes an empty_layer step. buildah records every WORKDIR as empty_layer and
  creates the directory only when a later step needs it.
- Times: every path in the rootfs gets its mtime set to SOURCE_DATE_EPOCH after each step (Docker
  keeps the sources' mtimes and stamps created directories with the build time). So a layer depends
  on names, types, modes, owners and contents only, and the same Containerfile and context give the
  same manifest digest on any checkout. History `created` is that epoch too.
- A FROM scratch image gets PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin in Env
  when the base has no PATH, as both Docker and buildah add it.
- History `created_by` is the instruction as written (Docker writes `/bin/sh -c #(nop) COPY file:<hash>
  in /dest`), except for RUN, where it is the command as Docker and buildah write it: the argv joined
  by spaces (`/bin/sh -c mkdir -p /app`, or `echo hi` for `RUN ["echo", "hi"]`). buildah also adds an
  io.buildah.version label, this builder adds none.
- Times of a RUN layer: the container writes real times; they are set to SOURCE_DATE_EPOCH in the
  upper dir before it becomes the layer, as every time in the trees is (Docker keeps them).
- The cache keys RUN by the parent step and the instruction text only, as Docker's classic builder
  does: a command that reads the network or the clock is not run again while its text is the same.
- ENTRYPOINT clears a CMD inherited from the base image (the Dockerfile reference says so), but not
  one set earlier in the same Containerfile.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from conformance.ref.archives import oci_archive, read_docker_archive
from conformance.ref.buildcache import BuildCache, CachedStep, step_key
from conformance.ref.buildcopy import Source, inputs_digest, resolve_sources, stage_copy, stage_workdir
from conformance.ref.container import run_layer
from conformance.ref.containerfile import (
    Cmd,
    Copy,
    Entrypoint,
    Env,
    From,
    Instruction,
    Label,
    Run,
    User,
    Workdir,
    parse,
)
from conformance.ref.diff import diff_trees
from conformance.ref.errors import BuildError, LayerError, LayoutError, RefError
from conformance.ref.layers import apply_layer
from conformance.ref.layout import Layout, host_architecture, write_layout
from conformance.ref.oci import CONFIG, LAYER_TAR, MANIFEST, REF_NAME, Descriptor, History, Manifest, config_document

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# /tmp is on the slow root filesystem on some hosts; /dev/shm is tmpfs nearly everywhere.
_SHM = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class StepLayer(NamedTuple):
    """The layer a step made: blob digest, DiffID, blob size, and how many entries its tar holds."""

    digest: str
    diff_id: str
    size: int
    file_count: int


@dataclass(frozen=True, slots=True)
class BuildStep:
    """One instruction after FROM, in order; each is one history entry after the base image's."""

    instruction: str
    line: int
    layer: StepLayer | None
    cached: bool


@dataclass(frozen=True, slots=True)
class BuildResult:
    """The image written: its manifest and config digests, and what each step did."""

    manifest_digest: str
    config_digest: str
    steps: tuple[BuildStep, ...]


@dataclass
class _Image:
    """The image being built: layers so far, history, the `config` object, the platform, the cache key."""

    layers: list[tuple[Descriptor, str]]
    history: list[History]
    config: dict[str, Any]
    platform: dict[str, Any]
    key: str
    cmd_from_base: bool


def build_image(containerfile: str | os.PathLike[str], context: str | os.PathLike[str],
                layout: str | os.PathLike[str], tag: str, *, cache: BuildCache | str | os.PathLike[str] | None = None,
                source_date_epoch: int = 0, compression: str = "gzip",
                faults: frozenset[str] = frozenset()) -> BuildResult:
    """Build `containerfile` with `context` into the image layout `layout` (made if missing), named `tag`.

    `cache` is a BuildCache or its directory. `compression` is "gzip", "none" or "zstd" for the
    layers this build makes (base layers are copied as they are). Relative `oci:` and archive paths in
    FROM are taken from the context directory. `faults` are deliberately wrong behaviours for the
    suite's own tests: "snapshot-layers" (each layer holds the whole tree, not the step's changes),
    "history-without-empty-layer" (metadata steps recorded as if they made a layer).
    """
    try:
        text = Path(containerfile).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BuildError(f"cannot read {containerfile}: {err}") from None
    instructions = parse(text)
    if not os.path.isdir(context):
        raise BuildError(f"the build context {context} is not a directory")
    store = BuildCache(cache) if isinstance(cache, (str, os.PathLike)) else cache
    target = Layout.create(layout)
    created = datetime.datetime.fromtimestamp(source_date_epoch, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with _scratch() as scratch:
        before, after = os.path.join(scratch, "before"), os.path.join(scratch, "after")
        os.mkdir(before, 0o755)
        os.mkdir(after, 0o755)
        first = instructions[0]
        assert isinstance(first, From)
        image = _base(first, os.fspath(context), target)
        for tree in (before, after):
            _apply_base(first, target, image, tree)
            _settle(tree, source_date_epoch)
        builder = _Builder(target, None if faults else store, os.fspath(context), scratch, before, after,
                           source_date_epoch, compression, created, faults)
        steps = tuple(builder.step(image, step) for step in instructions[1:])
    document = config_document([diff for _, diff in image.layers], image.history,
                               architecture=image.platform["architecture"], os=image.platform["os"],
                               config=image.config)
    document.update({k: v for k, v in image.platform.items() if k in ("variant", "os.version")})
    if "history-without-empty-layer" in faults:  # FAULT: past config_document's own check of the pairing
        for step in document.get("history", []):
            step.pop("empty_layer", None)
    document["created"] = created
    config = target.add_json(document, CONFIG)
    manifest = target.add_json(Manifest(config, tuple(d for d, _ in image.layers)).to_json(), MANIFEST)
    named = Descriptor(manifest.media_type, manifest.digest, manifest.size, {REF_NAME: tag})
    write_layout(target.path, [*(m for m in target.index().manifests if m.ref_name != tag), named])
    return BuildResult(manifest.digest, config.digest, steps)


@dataclass
class _Builder:
    """Runs the steps after FROM; see the module doc for the two trees."""

    target: Layout
    cache: BuildCache | None
    context: str
    scratch: str
    before: str
    after: str
    epoch: int
    compression: str
    created: str
    faults: frozenset[str] = frozenset()

    def step(self, image: _Image, step: Instruction) -> BuildStep:
        """Run one instruction: a layer for COPY, ADD, RUN and a WORKDIR that creates its directory."""
        inputs = ""
        sources: tuple[Source, ...] = ()
        workdir = str(image.config.get("WorkingDir") or "/")
        if isinstance(step, Copy):
            sources = resolve_sources(step, self.context)
            inputs = inputs_digest(sources)
        key = step_key(image.key, step.text, inputs)
        hit = self.cache.lookup(key) if self.cache is not None else None
        layer: bytes | None = None
        entries = 0
        if hit is not None:
            layer, entries = hit.layer, hit.entries
            if layer is not None:
                self._apply(self.after, layer, step)
        elif isinstance(step, Run):
            layer = self._run(image, step)
            entries = _count(layer)
            self._apply(self.after, layer, step)
        elif isinstance(step, (Copy, Workdir)):
            if isinstance(step, Copy):
                staged: bytes | None = stage_copy(step, sources, self.after, workdir, self.scratch, self.epoch)
            else:
                staged = stage_workdir(self.after, _workdir(workdir, step.path), step, self.epoch)
            if staged is not None:
                self._apply(self.after, staged, step)
                try:
                    lower = None if "snapshot-layers" in self.faults else self.before  # FAULT: the whole tree
                    layer = diff_trees(lower, self.after)
                except LayerError as err:
                    raise BuildError(f"the step's changes cannot be stored in a layer: {err}", line=step.line,
                                     instruction=step.text) from None
                entries = _count(layer)
        if hit is None and self.cache is not None:
            self.cache.store(key, CachedStep(layer, entries))
        image.key = key
        _configure(image, step, workdir)
        created_by = " ".join(step.argv) if isinstance(step, Run) else step.text
        if layer is None:
            image.history.append(History(created_by=created_by, empty_layer=True, created=self.created))
            return BuildStep(step.text, step.line, None, hit is not None)
        self._apply(self.before, layer, step)
        descriptor, diff_id = self.target.add_layer(layer, compression=self.compression)
        image.layers.append((descriptor, diff_id))
        image.history.append(History(created_by=created_by, created=self.created))
        return BuildStep(step.text, step.line, StepLayer(descriptor.digest, diff_id, descriptor.size, entries),
                         hit is not None)

    def _run(self, image: _Image, step: Run) -> bytes:
        """The RUN step's layer: its command run on `before`, the container's upper dir as a layer."""
        try:
            status, layer = run_layer(self.before, image.config, step.argv, epoch=self.epoch, stdout=2, stderr=2)
        except RefError as err:
            raise BuildError(f"the step's container could not run: {err}", line=step.line,
                             instruction=step.text) from None
        if status != 0 or layer is None:
            raise BuildError(f"the command '{' '.join(step.argv)}' returned a non-zero code: {status}",
                             line=step.line, instruction=step.text)
        return layer

    def _apply(self, tree: str, layer: bytes, step: Instruction) -> None:
        try:
            apply_layer(tree, layer, label=f"line {step.line}")
        except RefError as err:
            raise BuildError(f"{err}; check the destination", line=step.line, instruction=step.text) from None
        _settle(tree, self.epoch)


def _workdir(current: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(current, path)) if path != "/" else "/"


def _configure(image: _Image, step: Instruction, workdir: str) -> None:
    """What a step changes in the image config (Docker's names for the fields, config.md)."""
    config = image.config
    if isinstance(step, Env):
        env = [str(item) for item in config.get("Env") or []]
        for name, value in step.pairs:
            env = [item for item in env if item.partition("=")[0] != name] + [f"{name}={value}"]
        config["Env"] = env
    elif isinstance(step, Label):
        config["Labels"] = {**(config.get("Labels") or {}), **dict(step.pairs)}
    elif isinstance(step, Workdir):
        config["WorkingDir"] = _workdir(workdir, step.path)
    elif isinstance(step, User):
        config["User"] = step.user
    elif isinstance(step, Cmd):
        config["Cmd"] = list(step.argv)
        image.cmd_from_base = False
    elif isinstance(step, Entrypoint):
        config["Entrypoint"] = list(step.argv)
        if image.cmd_from_base:
            config.pop("Cmd", None)
            image.cmd_from_base = False


def _count(layer: bytes) -> int:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return sum(1 for _ in tar)


# The base image


def _base(step: From, context: str, target: Layout) -> _Image:
    """The base image's layers (their blobs copied into `target`), history, config and platform."""
    transport, _, reference = step.image.partition(":")
    try:
        if step.image == "scratch":
            image = _Image([], [], {}, {"architecture": host_architecture(), "os": "linux"}, "scratch", False)
        elif transport == "oci" and reference:
            path, _, ref = reference.partition(":")
            image = _from_layout(Layout(os.path.join(context, path)), ref or None, target)
        elif transport == "oci-archive" and reference:
            path, _, ref = reference.partition(":")
            with oci_archive(os.path.join(context, path)) as unpacked:
                image = _from_layout(Layout(unpacked), ref or None, target)
        elif transport == "docker-archive" and reference:
            path, _, ref = reference.partition(":")
            image = _from_docker_archive(os.path.join(context, path), ref or None, target)
        else:
            raise BuildError("only scratch, oci:<layout>[:ref], oci-archive:<tar>[:ref] and docker-archive:<tar>[:tag] "
                             "can be built on (nothing is pulled)", line=step.line, instruction=step.text)
    except (LayoutError, OSError) as err:
        raise BuildError(f"cannot read the base image: {err}", line=step.line, instruction=step.text) from None
    if not any(str(item).startswith("PATH=") for item in image.config.get("Env") or []):
        image.config["Env"] = [*(image.config.get("Env") or []), DEFAULT_PATH]
    counted = sum(1 for h in image.history if not h.empty_layer)
    if not image.history and image.layers:  # config.md makes history optional: one entry per layer then
        image.history = [History(comment="base layer") for _ in image.layers]
    elif counted != len(image.layers):
        raise BuildError(f"the base image's history has {counted} layer steps for {len(image.layers)} layers",
                         line=step.line, instruction=step.text)
    return image


def _from_layout(source: Layout, ref: str | None, target: Layout) -> _Image:
    descriptor = source.resolve(ref)
    manifest = source.manifest(descriptor)
    config = source.config(manifest)
    if len(config.diff_ids) != len(manifest.layers):
        raise LayoutError(f"manifest {descriptor.digest}: {len(manifest.layers)} layers for "
                          f"{len(config.diff_ids)} diff_ids")
    layers = []
    for blob, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
        with source.open_blob(blob) as reader:
            copied = target.add_blob(reader, blob.media_type)
            reader.drain()
        layers.append((copied, diff_id))
    return _Image(layers, list(config.history), dict(config.document.get("config") or {}),
                  _platform(config.document), descriptor.digest, "Cmd" in (config.document.get("config") or {}))


def _from_docker_archive(path: str, tag: str | None, target: Layout) -> _Image:
    images = read_docker_archive(path)
    chosen = [i for i in images if tag is None or tag in i.tags]
    if len(chosen) != 1:
        raise LayoutError(f"{path}: {len(chosen)} images match {tag or 'no tag'}")
    image = chosen[0]
    layers = []
    with tarfile.open(path) as archive:
        for name, diff_id in zip(image.layers, image.config.diff_ids, strict=True):
            handle = archive.extractfile(name)
            if handle is None:
                raise LayoutError(f"{path}: {name} is not a regular file")
            data = handle.read()
            if "sha256:" + hashlib.sha256(data).hexdigest() != diff_id:
                raise LayoutError(f"{path}: layer {name} does not hash to its DiffID {diff_id}")
            layers.append((target.add_blob(data, LAYER_TAR), diff_id))
    document = image.config.document
    key = "sha256:" + hashlib.sha256(repr(sorted(document.items())).encode()).hexdigest()
    return _Image(layers, list(image.config.history), dict(document.get("config") or {}), _platform(document), key,
                  "Cmd" in (document.get("config") or {}))


def _platform(document: Any) -> dict[str, Any]:
    return {key: document[key] for key in ("architecture", "os", "variant", "os.version") if key in document} | {
        "architecture": document.get("architecture") or host_architecture(), "os": document.get("os") or "linux"}


def _apply_base(step: From, layout: Layout, image: _Image, tree: str) -> None:
    for descriptor, diff_id in image.layers:
        try:
            with layout.open_blob(descriptor) as reader:
                apply_layer(tree, reader, media_type=descriptor.media_type, label=descriptor.short(),
                            expected_diff_id=diff_id)
                reader.drain()
        except RefError as err:
            raise BuildError(f"the base image's layer cannot be applied: {err}", line=step.line,
                             instruction=step.text) from None


# Scratch trees


def _settle(tree: str, epoch: int) -> None:
    """Every mtime (and atime) in `tree` set to `epoch`: layers then carry no build time (module doc)."""
    times = (epoch * 10**9, epoch * 10**9)
    for top, dirs, files in os.walk(tree):
        for name in (*dirs, *files):
            os.utime(os.path.join(top, name), ns=times, follow_symlinks=False)
    os.utime(tree, ns=times)


@contextlib.contextmanager
def _scratch() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="conformance-build-", dir=_SHM)
    try:
        yield path
    finally:
        for top, dirs, _ in os.walk(path):
            for name in dirs:
                child = os.path.join(top, name)
                if not os.path.islink(child):
                    os.chmod(child, 0o700)
        shutil.rmtree(path)
