"""The reference builder against `docker build` (classic builder) and `podman build`, layer by layer.

The same base (one hand-made layer, loaded into each engine) and the same Containerfile; each image's
layers above the base are compared as file trees: names, types, modes, owners, contents and symlink
targets, never times (Docker keeps source mtimes and stamps new directories with the build time; the
reference sets every time to SOURCE_DATE_EPOCH). Known differences are spelled out where they apply.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.ref.build import build_image
from conformance.ref.layout import Layout, host_architecture
from conformance.ref.oci import History

DOCKER = "/usr/bin/docker"
DOCKER_HOST = "unix:///run/container-conformance/docker.sock"
PODMAN = shutil.which("podman")

STEPS = """\
COPY dir /opt/dir/
COPY a.txt /etc/
COPY a.txt /lib/
ADD arch.tar.gz /ex/
ENV A=1
WORKDIR /work/here
CMD ["/bin/sh"]
"""

Tree = dict[str, tuple[str, int, int, int, str]]


def _entry(name: str, kind: bytes, mode: int, owner: tuple[int, int] = (0, 0), data: bytes = b"",
           link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, len(data), link
    info.uid, info.gid = owner
    info.mtime = 1_000_000_000
    return info, data


def _base_layer() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in [
            _entry("etc", tarfile.DIRTYPE, 0o755),
            _entry("etc/hostname", tarfile.REGTYPE, 0o644, data=b"base\n"),
            _entry("lib", tarfile.SYMTYPE, 0o777, link="usr/lib"),
            _entry("opt", tarfile.DIRTYPE, 0o750),
            _entry("opt/keep", tarfile.REGTYPE, 0o600, (7, 8), b"kept\n"),
            _entry("usr", tarfile.DIRTYPE, 0o755),
            _entry("usr/lib", tarfile.DIRTYPE, 0o755),
        ]:
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _context(root: Path) -> Path:
    context = root / "context"
    (context / "dir" / "sub").mkdir(parents=True)
    (context / "a.txt").write_text("hello\n")
    (context / "dir" / "x").write_text("x\n")
    (context / "dir" / "x").chmod(0o600)
    (context / "dir" / "sub" / "y").write_text("y\n")
    (context / "dir" / "sub").chmod(0o700)
    os.symlink("x", context / "dir" / "link")
    with tarfile.open(context / "arch.tar.gz", "w:gz") as tar:
        for info, data in [_entry("inner", tarfile.DIRTYPE, 0o711, (3, 4)),
                           _entry("inner/f", tarfile.REGTYPE, 0o640, (3, 4), b"from the tar\n")]:
            tar.addfile(info, io.BytesIO(data))
    return context


def _docker_archive(root: Path, layer: bytes, tag: str) -> Path:
    """The base as Docker 20.10 saves images: manifest.json, a config, and <id>/layer.tar."""
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": host_architecture(), "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                         "history": [{"created_by": "conformance base"}]}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": ["base/layer.tar"]}]).encode()
    path = root / "base-docker-archive.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in [(config_name, config), ("base/layer.tar", layer), ("manifest.json", manifest)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _tree(layer: bytes) -> Tree:
    """A layer as (type, mode, uid, gid, content digest or link target) by name; times left out."""
    tree: Tree = {}
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:*") as tar:
        for member in tar:
            name = member.name.removeprefix("./").rstrip("/")
            kind = "0" if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else member.type.decode()
            handle = tar.extractfile(member) if member.isreg() else None
            what = hashlib.sha256(handle.read()).hexdigest()[:12] if handle else member.linkname
            tree[name] = (kind, member.mode & 0o7777, member.uid, member.gid, what)
    return tree


def _saved_layers(archive: Path) -> list[Tree]:
    with tarfile.open(archive) as tar:
        handle = tar.extractfile("manifest.json")
        assert handle is not None
        [image] = json.load(handle)
        layers = []
        for name in image["Layers"]:
            member = tar.extractfile(name)
            assert member is not None
            layers.append(_tree(member.read()))
    return layers


def _ref_layers(root: Path, context: Path) -> tuple[list[Tree], list[str]]:
    """The reference image's layers above the base, and the instruction of each."""
    base = Layout.create(root / "base-layout")
    base.add_image("base", [base.add_layer(_base_layer(), compress=True)], history=[History("conformance base")])
    (root / "Containerfile.ref").write_text(f"FROM oci:{root / 'base-layout'}:base\n{STEPS}")
    result = build_image(root / "Containerfile.ref", context, root / "ref-layout", "ref")
    layout = Layout(root / "ref-layout")
    manifest = layout.manifest(layout.resolve("ref"))
    trees = [_tree(layout.read_blob(layer, 1 << 30)) for layer in manifest.layers[1:]]
    return trees, [step.instruction for step in result.steps if step.layer is not None]


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert done.returncode == 0, f"{argv} exited {done.returncode}: {done.stderr[-2000:]}"
    return done


def _docker_env() -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": DOCKER_HOST, "DOCKER_BUILDKIT": "0"}


@pytest.fixture
def docker() -> Iterator[list[str]]:
    """The docker CLI aimed at the provisioned daemon; a skip with the reason when it does not answer."""
    if not os.path.exists(DOCKER):
        pytest.skip(f"{DOCKER} is not installed")
    try:
        answer = subprocess.run([DOCKER, "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                text=True, timeout=15, env=_docker_env(), check=False)
    except subprocess.TimeoutExpired:
        pytest.skip(f"dockerd at {DOCKER_HOST} did not answer within 15 s")
    if answer.returncode != 0:
        pytest.skip(f"dockerd at {DOCKER_HOST} does not answer: {answer.stderr.strip()[:200]}")
    yield [DOCKER]


def test_ref_layers_match_docker_classic_build(scratch: Path, docker: list[str]) -> None:
    """Per layer above the base, ref and `docker build` (DOCKER_BUILDKIT=0) hold the same file trees."""
    context = _context(scratch)
    tag = f"conformance-ref-build-{uuid.uuid4().hex[:12]}"
    env = _docker_env()
    archive = _docker_archive(scratch, _base_layer(), f"{tag}-base:1")
    (scratch / "Containerfile.docker").write_text(f"FROM {tag}-base:1\n{STEPS}")
    try:
        _run([*docker, "load", "-q", "-i", str(archive)], env)
        _run([*docker, "build", "-q", "--no-cache", "--force-rm", "-f", str(scratch / "Containerfile.docker"),
              "-t", f"{tag}:1", str(context)], env)
        _run([*docker, "save", "-o", str(scratch / "docker.tar"), f"{tag}:1"], env)
    finally:
        subprocess.run([*docker, "rmi", "-f", f"{tag}:1", f"{tag}-base:1"], capture_output=True, timeout=60, env=env,
                       check=False)
    theirs = _saved_layers(scratch / "docker.tar")[1:]
    ours, instructions = _ref_layers(scratch, context)
    assert instructions == ["COPY dir /opt/dir/", "COPY a.txt /etc/", "COPY a.txt /lib/", "ADD arch.tar.gz /ex/",
                            "WORKDIR /work/here"]
    assert len(ours) == len(theirs)
    for instruction, mine, docker_tree in zip(instructions, ours, theirs, strict=True):
        assert mine == docker_tree, f"{instruction}: ref {mine} != docker {docker_tree}"


@pytest.fixture
def podman(scratch: Path) -> Iterator[list[str]]:
    """podman with its own storage on tmpfs (vfs), so the host's is not touched; a skip when it cannot run."""
    if PODMAN is None:
        pytest.skip("podman is not installed")
    home = scratch / "podman"
    for part in ("root", "runroot", "tmp"):
        (home / part).mkdir(parents=True)
    argv = [PODMAN, "--root", str(home / "root"), "--runroot", str(home / "runroot"), "--tmpdir", str(home / "tmp"),
            "--storage-driver", "vfs", "--events-backend", "none", "--runtime", "runc"]
    answer = subprocess.run([*argv, "info", "--format", "{{.Host.OCIRuntime.Name}}"], capture_output=True, text=True,
                            timeout=60, check=False, env={**os.environ, "TMPDIR": str(home / "tmp")})
    if answer.returncode != 0:
        pytest.skip(f"podman does not run here: {answer.stderr.strip()[:200]}")
    try:
        yield argv
    finally:
        subprocess.run([*argv, "rmi", "-a", "-f"], capture_output=True, timeout=60, check=False)


def test_ref_layers_match_podman_build_but_workdir(scratch: Path, podman: list[str]) -> None:
    """podman build (buildah) gives the same trees, except that WORKDIR makes no layer there (and no directory)."""
    context = _context(scratch)
    env = {**os.environ, "TMPDIR": str(scratch / "podman" / "tmp")}
    archive = _docker_archive(scratch, _base_layer(), "localhost/conformance-ref-base:1")
    (scratch / "Containerfile.podman").write_text(f"FROM localhost/conformance-ref-base:1\n{STEPS}")
    _run([*podman, "load", "-q", "-i", str(archive)], env)
    _run([*podman, "build", "-q", "--format", "docker", "-f", str(scratch / "Containerfile.podman"),
          "-t", "localhost/conformance-ref-build:1", str(context)], env)
    _run([*podman, "save", "--format", "docker-archive", "-o", str(scratch / "podman.tar"),
          "localhost/conformance-ref-build:1"], env)
    theirs = _saved_layers(scratch / "podman.tar")[1:]
    ours, instructions = _ref_layers(scratch, context)
    kept = [(i, tree) for i, tree in zip(instructions, ours, strict=True) if not i.startswith("WORKDIR")]
    assert len(kept) == len(theirs)
    for (instruction, mine), podman_tree in zip(kept, theirs, strict=True):
        assert mine == podman_tree, f"{instruction}: ref {mine} != podman {podman_tree}"
