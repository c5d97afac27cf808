"""OCI-LAYER-005: with no whiteouts, applying a layer is plain tar extraction; GNU tar is the witness."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from trees import ROOT, snapshot

from conformance.ref.layers import apply_layer

TAR = shutil.which("tar")


def gnu_tar(*argv: str | Path) -> None:
    done = subprocess.run([TAR or "tar", *map(str, argv)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def source_tree(root: Path) -> None:
    """Long names and targets, non-ASCII names, a sparse file, xattrs, hardlinks, setuid, fifo, devices."""
    deep = root / ("d" * 120) / ("e" * 120)
    deep.mkdir(parents=True)
    (deep / "f").write_text("deep")
    (root / ("x" * 150)).write_text("long name")
    (root / "longlink").symlink_to("t" * 200)
    (root / "ünïcode").write_text("u")
    with open(root / "sparse", "wb") as sparse:
        sparse.truncate(5 << 20)
        sparse.seek(0, os.SEEK_END)
        sparse.write(b"end")
    os.setxattr(root / "sparse", "user.note", b"\x00\xffbinary")
    os.link(root / "sparse", root / "sparse.link")
    (root / "suid").write_bytes(b"#!")
    (root / "suid").chmod(0o4755)
    os.mkfifo(root / "fifo", 0o640)
    if ROOT:
        os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chown(root / "suid", 1000, 1000)
    os.utime(root / "suid", ns=(1_234_567_890_123_456_789, 1_234_567_890_123_456_789))


@pytest.mark.skipif(TAR is None, reason="needs GNU tar")
def test_apply_equals_gnu_tar_extraction(scratch: Path) -> None:
    source, ours, theirs = scratch / "src", scratch / "ours", scratch / "gnu"
    for path in (source, ours, theirs):
        path.mkdir()
    source_tree(source)
    archive = scratch / "layer.tar"
    gnu_tar("--format=pax", "--sparse", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", source, "-cf",
            archive, ".")
    with open(archive, "rb") as layer:
        stats = apply_layer(ours, layer)
    gnu_tar("--xattrs", "--xattrs-include=*", "--numeric-owner", "--same-permissions", "--same-owner", "-C", theirs,
            "-xf", archive)
    assert snapshot(ours, include_root=True) == snapshot(theirs, include_root=True)
    assert stats.hardlinks == 1
    assert os.getxattr(ours / "sparse", "user.note") == b"\x00\xffbinary"
