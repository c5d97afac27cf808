"""The bridge between overlay and layers: an upper dir as an OCI layer (ref.commit), checked against the
kernel's merged view and against what `docker commit` and `podman commit` make of the same container changes."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from trees import ROOT, snapshot

from conformance.probe.actions import NotApplicable
from conformance.probe.appliers import docker_cli, podman_argv
from conformance.ref.commit import upper_to_layer
from conformance.ref.errors import LayerError
from conformance.ref.layers import apply_layer

BUSYBOX = shutil.which("busybox")
needs_root = pytest.mark.skipif(not ROOT, reason="whiteouts are character devices 0/0: mknod needs root")


def _entries(layer: bytes) -> dict[str, tuple[Any, ...]]:
    """name -> (type, mode, uid, gid, content or link target) of each entry; mtimes left out."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            name = member.name[2:] if member.name.startswith("./") else member.name
            found[name.rstrip("/") or "."] = (
                member.type, member.mode & 0o7777, member.uid, member.gid,
                handle.read() if handle else member.linkname)
    return found


def _upper(base: Path) -> Path:
    """An upper dir as overlayfs leaves it after: rm /gone, rm -r /d && mkdir /d && touch /d/new, chmod /b."""
    upper = base / "upper"
    (upper / "d").mkdir(parents=True)
    os.mknod(upper / "gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    os.setxattr(upper / "d", "trusted.overlay.opaque", b"y")
    (upper / "d" / "new").write_text("new\n")
    (upper / "b").write_text("b\n")
    (upper / "b").chmod(0o600)
    os.setxattr(upper / "b", "trusted.overlay.origin", b"\x00\xfb")
    os.setxattr(upper / "b", "user.kept", b"yes")
    return upper


@needs_root
def test_upper_becomes_whiteouts_and_opaque_markers(scratch: Path) -> None:
    entries = _entries(upper_to_layer(_upper(scratch)))
    assert sorted(entries) == [".wh.gone", "b", "d", "d/.wh..wh..opq", "d/new"]
    assert entries[".wh.gone"][:2] == (tarfile.REGTYPE, 0o600) and entries["b"][1] == 0o600
    with tarfile.open(fileobj=io.BytesIO(upper_to_layer(scratch / "upper"))) as tar:
        headers = tar.getmember("b").pax_headers
    assert headers.get("SCHILY.xattr.user.kept") == "yes" and not any(".overlay." in key for key in headers)


@needs_root
def test_lower_plus_committed_upper_equals_the_kernels_merged_view(scratch: Path) -> None:
    """The central bridge property: apply(lower, commit(upper)) is the overlay mount of upper over lower."""
    lower = scratch / "lower"
    (lower / "d").mkdir(parents=True)
    for name, text in (("gone", "x"), ("b", "lower b"), ("d/old", "old"), ("keep", "kept")):
        (lower / name).write_text(text)
    upper = _upper(scratch)
    merged = scratch / "merged"
    merged.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={upper}:{lower},ro", str(merged)],
                   check=True)  # upper as the top read-only lower: the view, and the upper left as it is
    try:
        view = snapshot(merged)
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    flattened = scratch / "flattened"
    shutil.copytree(lower, flattened, symlinks=True)
    apply_layer(flattened, upper_to_layer(upper))
    assert {k: v[:4] + v[5:] for k, v in snapshot(flattened).items()} == {k: v[:4] + v[5:] for k, v in view.items()}


@needs_root
def test_metacopy_and_redirect_uppers_are_refused_with_the_reason(scratch: Path) -> None:
    upper = scratch / "upper"
    (upper / "moved").mkdir(parents=True)
    os.setxattr(upper / "moved", "trusted.overlay.redirect", b"/old")
    with pytest.raises(LayerError, match="redirected directory"):
        upper_to_layer(upper)
    os.removexattr(upper / "moved", "trusted.overlay.redirect")
    (upper / "f").write_text("")
    os.setxattr(upper / "f", "trusted.overlay.metacopy", b"")
    with pytest.raises(LayerError, match="metadata-only copy-up"):
        upper_to_layer(upper)


_CHANGES = "rm /etc/motd && rm -r /etc/sub && mkdir /etc/sub && echo n > /etc/sub/new && echo b=2 >> /etc/conf"


def _engine(name: str, scratch: Path) -> tuple[list[str], dict[str, str], list[str]]:
    """The engine's argv (a private store for podman), its environment and its extra `run` flags."""
    if name == "docker":
        try:
            client, env = docker_cli()
        except NotApplicable as exc:
            pytest.skip(str(exc))
        return [client], {**os.environ, **env, "DOCKER_BUILDKIT": "0"}, []
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    # podman here: runc (crun refuses hybrid cgroups) and explicit ulimits (no systemd to set them)
    return podman_argv(str(scratch)), dict(os.environ), ["--ulimit", "nofile=1024:1024", "--ulimit",
                                                         "nproc=1024:1024"]


@needs_root
@pytest.mark.skipif(not BUSYBOX, reason="needs busybox-static to run a container")
@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_engine_commit_makes_the_layer_ref_makes_of_the_containers_upper(scratch: Path, engine: str) -> None:
    """Run a container that deletes, replaces a directory and appends; the engine's commit layer and
    ref.commit of the container's UpperDir hold the same entries (times aside)."""
    argv, environ, run_flags = _engine(engine, scratch)
    suffix = os.urandom(3).hex()
    image, name, committed = f"conformance-commit-{suffix}:base", f"conformance-commit-{suffix}", \
        f"conformance-commit-{suffix}:committed"
    context = scratch / "context"
    (context / "etc" / "sub").mkdir(parents=True)
    shutil.copy2(BUSYBOX or "", context / "busybox")
    (context / "etc" / "motd").write_text("hi\n")
    (context / "etc" / "conf").write_text("a=1\n")
    (context / "etc" / "sub" / "old").write_text("old\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY busybox /bin/busybox\nCOPY etc /etc\n")

    def cli(*args: str) -> str:
        done = subprocess.run([*argv, *args], env=environ, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{engine} {args}: {done.stderr}"
        return done.stdout

    try:
        cli("build", "-q", "-t", image, str(context))
        cli("run", "--name", name, "--network", "none", *run_flags, image, "/bin/busybox", "sh", "-c", _CHANGES)
        upper = cli("inspect", "--format", "{{.GraphDriver.Data.UpperDir}}", name).strip()
        ours = _entries(upper_to_layer(upper))
        cli("commit", name, committed)
        cli("save", *(["--format", "docker-archive"] if engine == "podman" else []), "-o", str(scratch / "saved.tar"),
            committed)
    finally:
        for args in (("rm", "-f", name), ("rmi", "-f", committed), ("rmi", "-f", image)):
            subprocess.run([*argv, *args], env=environ, capture_output=True, check=False)
        if engine == "podman":
            subprocess.run([*argv, "system", "reset", "--force"], env=environ, capture_output=True, check=False)
    with tarfile.open(scratch / "saved.tar") as saved:
        import json

        [entry] = json.loads(saved.extractfile("manifest.json").read())  # type: ignore[union-attr]
        theirs = _entries(saved.extractfile(entry["Layers"][-1]).read())  # type: ignore[union-attr]
    assert {"etc/.wh.motd", "etc/sub/.wh..wh..opq", "etc/sub/new", "etc/conf"} <= set(theirs)
    assert _markers_as_names(ours) == _markers_as_names(theirs)


def _markers_as_names(entries: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """Whiteout and opaque markers reduced to type and content: the image-spec gives them no mode, and the
    engines differ (docker writes 0600 as ref does, podman's containers/storage 0000)."""
    return {name: (entry[0], entry[4]) if os.path.basename(name).startswith(".wh.") else entry
            for name, entry in entries.items()}
