"""Differential: layouts written by umoci and copied by skopeo read, verify and apply like `umoci unpack`;
and a layout written here is read by umoci and skopeo (OCI-MAN-003, OCI-LAYER-005, OCI-DESC-007)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from jail import make_scratch, remove_scratch
from trees import ROOT, snapshot

from conformance.ref.diff import diff_trees
from conformance.ref.image import apply_image
from conformance.ref.layout import Layout

UMOCI, SKOPEO = shutil.which("umoci"), shutil.which("skopeo")
BUSYBOX = shutil.which("busybox")

pytestmark = [
    pytest.mark.skipif(not (UMOCI and SKOPEO and BUSYBOX), reason="needs umoci, skopeo and busybox on PATH"),
    pytest.mark.skipif(not ROOT, reason="umoci unpack without --rootless needs root"),
]


def run(*argv: str | Path, cwd: Path | None = None) -> None:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}: {done.stderr}"


def populate(rootfs: Path) -> None:
    """A small busybox system with the kinds of entries layers carry."""
    (rootfs / "bin").mkdir()
    shutil.copy2(BUSYBOX or "", rootfs / "bin" / "busybox")
    for applet in ("sh", "ls", "cat"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    os.link(rootfs / "bin" / "busybox", rootfs / "bin" / "busybox.hard")
    (rootfs / "etc" / "sub").mkdir(parents=True)
    (rootfs / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (rootfs / "etc" / "motd").write_text("welcome\n")
    for name in "ab":
        (rootfs / "etc" / "sub" / name).write_text(name)
    (rootfs / "usr" / "bin").mkdir(parents=True)
    (rootfs / "usr" / "bin" / "suid").write_bytes(b"#!/bin/sh\n")
    (rootfs / "usr" / "bin" / "suid").chmod(0o4755)
    (rootfs / "secret").mkdir(mode=0o700)
    os.chown(rootfs / "secret", 1000, 1000)
    (rootfs / "abs").symlink_to("/etc/hosts")
    (rootfs / "dev").mkdir()
    os.mknod(rootfs / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mkfifo(rootfs / "dev" / "fifo")
    os.setxattr(rootfs / "etc" / "hosts", "user.conformance", b"x")


def change(rootfs: Path) -> None:
    """The second layer: a deletion, a replaced directory, a mode change, an addition."""
    (rootfs / "etc" / "motd").unlink()
    shutil.rmtree(rootfs / "etc" / "sub")
    (rootfs / "etc" / "sub").mkdir()
    (rootfs / "etc" / "sub" / "c").write_text("c")
    (rootfs / "etc" / "hosts").chmod(0o600)
    (rootfs / "etc" / "new").write_text("new\n")


@pytest.fixture(scope="module")
def images() -> Iterator[Path]:
    """X: two layers made by `umoci repack`; Y: `skopeo copy` of X; umoci: `umoci unpack` of X."""
    work = make_scratch()
    try:
        run(UMOCI or "", "init", "--layout", "X", cwd=work)
        run(UMOCI or "", "new", "--image", "X:t", cwd=work)
        run(UMOCI or "", "unpack", "--image", "X:t", "b1", cwd=work)
        populate(work / "b1" / "rootfs")
        run(UMOCI or "", "repack", "--image", "X:t", "b1", cwd=work)
        run(UMOCI or "", "unpack", "--image", "X:t", "b2", cwd=work)
        change(work / "b2" / "rootfs")
        run(UMOCI or "", "repack", "--image", "X:t", "b2", cwd=work)
        run(SKOPEO or "", "copy", "--quiet", "oci:X:t", "oci:Y:t", cwd=work)
        run(UMOCI or "", "unpack", "--image", "X:t", "umoci", cwd=work)
        yield work
    finally:
        remove_scratch(work)


def comparable(root: Path) -> dict[str, tuple[object, ...]]:
    """Type, mode, owner, content or target, xattrs, hardlink partners: what both appliers must agree on."""
    return {path: (kind, mode, uid, gid, data, xattrs, *links)
            for path, (kind, mode, uid, gid, _mtime, data, xattrs, _, *links) in snapshot(root).items()}


def test_umoci_image_verifies_and_has_two_layers_with_a_whiteout(images: Path) -> None:
    layout = Layout(images / "X")
    manifest = layout.manifest(layout.resolve("t"))
    for blob in (manifest.config, *manifest.layers):
        layout.verify_blob(blob)
    assert len(manifest.layers) == 2 and len(layout.config(manifest).diff_ids) == 2


@pytest.mark.parametrize("layout", ["X", "Y"], ids=["umoci-repack", "skopeo-copy"])
def test_applied_image_matches_umoci_unpack(images: Path, layout: str, scratch: Path) -> None:
    """OCI-MAN-003: applying the layers onto an empty directory gives umoci's rootfs: same paths, types,
    contents, modes, owners, symlink targets, devices, xattrs and hardlinks; mtimes of non-directories too."""
    stats = apply_image(images / layout, "t", scratch)
    ours, theirs = snapshot(scratch), snapshot(images / "umoci" / "rootfs")
    assert comparable(scratch) == comparable(images / "umoci" / "rootfs")
    assert {p: v[4] for p, v in ours.items() if v[0] != stat.S_IFDIR} == {
        p: v[4] for p, v in theirs.items() if v[0] != stat.S_IFDIR}
    assert stats.layers[1].whiteouts + stats.layers[1].opaque_whiteouts >= 1
    assert "etc/motd" not in ours and "etc/sub/a" not in ours and "etc/sub/c" in ours


def test_layout_written_here_is_read_by_umoci_and_skopeo(images: Path, scratch: Path) -> None:
    """Our writer, checked by other readers: umoci unpacks our layout to the same rootfs; skopeo copies
    it without changing a digest (OCI-DESC-007), and the copy applies the same."""
    source = images / "umoci" / "rootfs"
    layout = Layout.create(scratch / "ours")
    layout.add_image("t", [layout.add_layer(diff_trees(None, source), compress=True)])
    run(UMOCI or "", "unpack", "--image", "ours:t", "bundle", cwd=scratch)
    assert comparable(scratch / "bundle" / "rootfs") == comparable(source)
    run(SKOPEO or "", "copy", "--quiet", "oci:ours:t", "oci:copy:t", cwd=scratch)
    copied = Layout(scratch / "copy")
    assert copied.manifest(copied.resolve("t")).layers == layout.manifest(layout.resolve("t")).layers
    (scratch / "applied").mkdir()
    apply_image(copied, "t", scratch / "applied")
    assert comparable(scratch / "applied") == comparable(source)
