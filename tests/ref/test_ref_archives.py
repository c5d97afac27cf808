"""Differential: what `docker save` and `podman save` write, applied by ref, equals the engine's own
`export` of a container of that image (the engines built the image from a Dockerfile, whiteouts included)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from trees import ROOT, snapshot

from conformance.probe.actions import NotApplicable
from conformance.probe.appliers import LayerBlob, docker_cli, podman_argv, prune_engine_additions, untar
from conformance.ref.archives import (
    apply_docker_archive,
    archive_as_layout,
    is_docker_archive,
    oci_archive,
    read_docker_archive,
)
from conformance.ref.errors import LayoutError
from conformance.ref.image import apply_image
from conformance.ref.layout import Layout
from conformance.ref.oci import LAYER_TAR

BUSYBOX = shutil.which("busybox")
SUFFIX = os.urandom(3).hex()  # image and container names of this test run
pytestmark = [pytest.mark.skipif(not (ROOT and BUSYBOX), reason="needs root and busybox-static")]

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY etc /etc
RUN ["/bin/busybox", "rm", "-r", "/etc/motd", "/etc/sub"]
RUN ["/bin/busybox", "mkdir", "/etc/sub"]
RUN ["/bin/busybox", "chmod", "600", "/etc/conf"]
"""


def _context(path: Path) -> Path:
    path.mkdir()
    shutil.copy2(BUSYBOX or "", path / "busybox")
    (path / "etc" / "sub").mkdir(parents=True)
    (path / "etc" / "conf").write_text("setting=1\n")
    (path / "etc" / "motd").write_text("welcome\n")
    (path / "etc" / "sub" / "a").write_text("a")
    (path / "Dockerfile").write_text(DOCKERFILE)
    return path


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{argv}: exit {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


def _export(stream: list[str], into: Path, layers: list[LayerBlob],
            env: dict[str, str] | None = None) -> dict[str, tuple[object, ...]]:
    """The container's filesystem as the engine exports it, less what the engine adds to every container."""
    untar(stream, str(into), env=env)
    prune_engine_additions(str(into), layers)
    return snapshot(into)


def _comparable(tree: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    """Everything but mtimes: an engine's RUN steps touch directory times that no layer header records."""
    return {name: node[:4] + node[5:] for name, node in tree.items()}


def _saved_layers(path: Path) -> list[LayerBlob]:
    [image] = read_docker_archive(path)
    with tarfile.open(path) as archive:
        return [LayerBlob(archive.extractfile(name).read(), LAYER_TAR) for name in image.layers]  # type: ignore[union-attr]


@pytest.fixture
def docker() -> Iterator[tuple[str, dict[str, str]]]:
    try:
        yield docker_cli()
    except NotApplicable as exc:
        pytest.skip(str(exc))


def test_docker_save_applied_by_ref_equals_docker_export(docker: tuple[str, dict[str, str]], scratch: Path) -> None:
    client, env = docker
    tag = f"conformance-archives-{SUFFIX}:1"
    name = f"conformance-archives-{SUFFIX}"
    context = _context(scratch / "context")
    try:
        _run([client, "build", "--network", "none", "-q", "-t", tag, str(context)], {**env, "DOCKER_BUILDKIT": "0"})
        _run([client, "save", "-o", str(scratch / "saved.tar"), tag], env)
        _run([client, "create", "--name", name, tag, "/bin/busybox"], env)
        exported = _export([client, "export", name], scratch / "export", _saved_layers(scratch / "saved.tar"), env)
    finally:
        subprocess.run([client, "rm", "-f", name], check=False, capture_output=True, env={**os.environ, **env})
        subprocess.run([client, "rmi", "-f", tag], check=False, capture_output=True, env={**os.environ, **env})
    assert is_docker_archive(scratch / "saved.tar")
    [image] = read_docker_archive(scratch / "saved.tar")
    assert tag in image.tags and len(image.layers) >= 3  # COPY, COPY, RUNs (docker may share equal layers)
    (scratch / "rootfs").mkdir()
    apply_docker_archive(scratch / "saved.tar", scratch / "rootfs", tag=tag)
    applied = snapshot(scratch / "rootfs")
    assert "etc/motd" not in applied and "etc/sub/a" not in applied and "etc/sub" in applied
    assert _comparable(applied) == _comparable(exported)
    with archive_as_layout(scratch / "saved.tar", tag) as (layout, name):  # the same image as an OCI layout
        (scratch / "via-layout").mkdir()
        apply_image(layout, name, scratch / "via-layout")
    assert _comparable(snapshot(scratch / "via-layout")) == _comparable(applied)
    shown = subprocess.run([sys.executable, "-m", "conformance", "ref", "inspect", f"{scratch / 'saved.tar'}:{tag}"],
                           capture_output=True, text=True, timeout=120, check=False)
    assert shown.returncode == 0, shown.stderr
    assert f"{scratch / 'saved.tar'}:{tag}" in shown.stdout and "rm -r /etc/motd /etc/sub" in shown.stdout


def test_docker_archive_with_a_wrong_layer_is_refused_before_applying(docker: tuple[str, dict[str, str]],
                                                                      scratch: Path) -> None:
    """A layer member that does not hash to its DiffID: nothing is applied, the error names the member."""
    client, env = docker
    tag = f"conformance-archives-{SUFFIX}:2"
    context = _context(scratch / "context")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY etc /etc\n")
    try:
        _run([client, "build", "-q", "-t", tag, str(context)], {**env, "DOCKER_BUILDKIT": "0"})
        _run([client, "save", "-o", str(scratch / "saved.tar"), tag], env)
    finally:
        subprocess.run([client, "rmi", "-f", tag], check=False, capture_output=True, env={**os.environ, **env})
    [image] = read_docker_archive(scratch / "saved.tar")
    with tarfile.open(scratch / "saved.tar") as original, tarfile.open(scratch / "bad.tar", "w") as bad:
        for info in original:
            handle = original.extractfile(info) if info.isfile() else None
            if info.name == image.layers[0] and handle is not None:
                data = bytearray(handle.read())
                data[600] ^= 1
                info.size = len(data)
                bad.addfile(info, io.BytesIO(bytes(data)))
            else:
                bad.addfile(info, handle)
    (scratch / "rootfs").mkdir()
    with pytest.raises(LayoutError, match=f"layer {image.layers[0]} hashes to"):
        apply_docker_archive(scratch / "bad.tar", scratch / "rootfs")
    assert list((scratch / "rootfs").iterdir()) == []


def test_podman_oci_archive_applied_by_ref_equals_podman_export(scratch: Path) -> None:
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    podman = podman_argv(str(scratch))
    context = _context(scratch / "context")
    try:
        _run([*podman, "build", "--network", "none", "-q", "-t", "conformance-archives:1", str(context)])
        _run([*podman, "save", "--format", "oci-archive", "-o", str(scratch / "saved.tar"), "conformance-archives:1"])
        _run([*podman, "create", "--name", "conformance-archives", "conformance-archives:1", "/bin/busybox"])
        with oci_archive(scratch / "saved.tar") as layout:
            opened = Layout(layout)
            blobs = [LayerBlob(opened.read_blob(d, limit=1 << 30), d.media_type)
                     for d in opened.manifest(opened.resolve(None)).layers]
        exported = _export([*podman, "export", "conformance-archives"], scratch / "export", blobs)
    finally:
        subprocess.run([*podman, "system", "reset", "--force"], check=False, capture_output=True)
    assert not is_docker_archive(scratch / "saved.tar")
    (scratch / "rootfs").mkdir()
    with oci_archive(scratch / "saved.tar") as layout:
        stats = apply_image(layout, None, scratch / "rootfs")
    assert len(stats.layers) >= 3
    assert _comparable(snapshot(scratch / "rootfs")) == _comparable(exported)


def test_oci_archive_with_a_link_member_is_refused(scratch: Path) -> None:
    with tarfile.open(scratch / "evil.tar", "w") as archive:
        info = tarfile.TarInfo("blobs/sha256/abc")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(info)
    with pytest.raises(LayoutError, match="does not belong in an OCI archive"), oci_archive(scratch / "evil.tar"):
        pass
