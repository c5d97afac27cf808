"""zstd layers (image-spec layer.md `+zstd`): applied and written like gzip ones, bombs and cuts refused.

The project's .venv does not see Debian's python3-zstandard (no system site packages), so in-process
tests decode with the `zstd` program; the zstandard module, which a host's python3 uses, is exercised
through /usr/bin/python3 where it has the module.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from trees import directory, file, hardlink, make_tar, snapshot, symlink

from conformance.ref import streams
from conformance.ref.errors import LayerError, LimitError
from conformance.ref.image import apply_image
from conformance.ref.layers import ApplyOptions, apply_layer
from conformance.ref.layout import Layout
from conformance.ref.oci import LAYER_NONDISTRIBUTABLE_ZSTD, LAYER_TAR, LAYER_ZSTD
from conformance.ref.streams import ZstdFrames, zstd_compress

ZSTD, SKOPEO = shutil.which("zstd"), shutil.which("skopeo")
SYSTEM_PYTHON = "/usr/bin/python3"
REPO = Path(__file__).resolve().parents[2]

needs_zstd = pytest.mark.skipif(ZSTD is None and streams.zstd_module() is None,
                                reason="needs the zstd program or the zstandard module")

TAR = make_tar(directory("etc", mode=0o755), directory("bin"), directory("var"),
               file("etc/hosts", b"127.0.0.1 localhost\n" * 50, mode=0o644),
               file("bin/tool", bytes(range(256)) * 300, mode=0o755), symlink("bin/sh", "tool"),
               hardlink("bin/again", "bin/tool"), directory("var/empty", mode=0o700))


def _system_python_has_zstandard() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    return subprocess.run([SYSTEM_PYTHON, "-I", "-c", "import zstandard"], check=False,
                          capture_output=True).returncode == 0


@needs_zstd
def test_zstd_layer_applies_like_its_tar(scratch: Path) -> None:
    (scratch / "tar").mkdir()
    (scratch / "zstd").mkdir()
    plain = apply_layer(scratch / "tar", TAR, media_type=LAYER_TAR)
    packed = apply_layer(scratch / "zstd", zstd_compress(TAR), media_type=LAYER_ZSTD)
    assert snapshot(scratch / "zstd", nlink=True) == snapshot(scratch / "tar", nlink=True)
    assert packed.entries == plain.entries and packed.compressed_size < packed.size


@needs_zstd
def test_zstd_diff_id_is_the_digest_of_the_uncompressed_tar(scratch: Path) -> None:
    blob = zstd_compress(TAR)
    stats = apply_layer(scratch, blob, media_type=LAYER_NONDISTRIBUTABLE_ZSTD)
    assert stats.diff_id == f"sha256:{hashlib.sha256(TAR).hexdigest()}"
    assert stats.digest == f"sha256:{hashlib.sha256(blob).hexdigest()}" and stats.size == len(TAR)


@needs_zstd
def test_zstd_frames_back_to_back_are_one_layer(scratch: Path) -> None:
    """RFC 8878 § 3.1: a zstd stream is a sequence of frames, as a gzip file is of members."""
    stats = apply_layer(scratch, zstd_compress(TAR[:4096]) + zstd_compress(TAR[4096:]), media_type=LAYER_ZSTD)
    assert stats.diff_id == f"sha256:{hashlib.sha256(TAR).hexdigest()}"


@needs_zstd
def test_zstd_bomb_is_refused(scratch: Path) -> None:
    """H-21: 64 MiB of zeros compress to a few KiB; max_bytes stops the decoder, as for gzip."""
    blob = zstd_compress(make_tar(file("zeros", bytes(64 << 20))))
    assert len(blob) < 64 << 10
    with pytest.raises(LimitError, match="passes the limit of 16777216 bytes"):
        apply_layer(scratch, blob, media_type=LAYER_ZSTD, options=ApplyOptions(max_bytes=16 << 20), label="bomb")


@needs_zstd
@pytest.mark.parametrize("cut", [0.5, 0.9, -1])
def test_truncated_zstd_is_refused(scratch: Path, cut: float) -> None:
    """H-20: a cut stream is an error, not a shorter layer (zstandard's stream_reader would say nothing)."""
    blob = zstd_compress(TAR)
    end = len(blob) - 1 if cut == -1 else int(len(blob) * cut)
    with pytest.raises(LayerError, match="truncated zstd"):
        apply_layer(scratch, blob[:end], media_type=LAYER_ZSTD)


@needs_zstd
@pytest.mark.parametrize("blob", [b"this is not zstd at all" * 10, b""])
def test_not_zstd_is_refused(scratch: Path, blob: bytes) -> None:
    with pytest.raises(LayerError, match="zstd stream"):
        apply_layer(scratch, blob, media_type=LAYER_ZSTD)


@needs_zstd
def test_garbage_after_zstd_is_refused(scratch: Path) -> None:
    with pytest.raises(LayerError, match="corrupt zstd"):
        apply_layer(scratch, zstd_compress(TAR) + b"garbage!", media_type=LAYER_ZSTD)


def test_without_a_decoder_the_error_says_what_to_install(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "zstd_module", lambda: None)
    monkeypatch.setattr(streams, "zstd_program", lambda: None)
    with pytest.raises(LayerError, match=r"tar\+zstd layers need a zstd decoder: install python3-zstandard") as caught:
        apply_layer(scratch, b"\x28\xb5\x2f\xfd", media_type=LAYER_ZSTD, label="sha256:x..")
    assert caught.value.layer == "sha256:x.." and os.listdir(scratch) == []


@needs_zstd
def test_frame_walker_tells_whole_streams_from_cut_ones() -> None:
    blob = zstd_compress(TAR)
    skippable = (0x184D2A5A).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    for data, whole in [(blob, True), (blob + skippable + blob, True), (skippable, True), (b"", False),
                        (blob[:-1], False), (blob[:5], False), (blob + blob[:3], False), (b"nope", False)]:
        walker = ZstdFrames()
        for n in range(0, len(data), 7):  # any split of the input
            walker.feed(data[n:n + 7])
        assert walker.complete() is whole, (len(data), whole)


@needs_zstd
def test_layout_writes_and_applies_zstd_layers(scratch: Path) -> None:
    layout = Layout.create(scratch / "layout")
    descriptor, diff_id = layout.add_layer(TAR, compression="zstd")
    assert descriptor.media_type == LAYER_ZSTD and diff_id == f"sha256:{hashlib.sha256(TAR).hexdigest()}"
    assert layout.add_layer(TAR, compression="zstd")[0].digest == descriptor.digest, "reproducible"
    layout.add_image("t", [(descriptor, diff_id)])
    (scratch / "rootfs").mkdir()
    apply_image(scratch / "layout", "t", scratch / "rootfs")
    assert (scratch / "rootfs" / "etc" / "hosts").read_bytes() == b"127.0.0.1 localhost\n" * 50
    with pytest.raises(ValueError, match="compression 'lz4'"):
        layout.add_layer(TAR, compression="lz4")


@pytest.mark.skipif(not _system_python_has_zstandard(), reason="needs /usr/bin/python3 with zstandard")
def test_the_zstandard_module_decodes_and_refuses_like_the_program(scratch: Path) -> None:
    """The path a host's python3 takes: the module, with the frame walker to catch truncation."""
    script = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, sys.argv[1])
        from conformance.ref import streams
        from conformance.ref.errors import RefError
        from conformance.ref.layers import ApplyOptions, apply_layer
        assert streams.zstd_module() is not None
        blob = open(sys.argv[2], "rb").read()
        out = {}
        for name, data, limit in [("whole", blob, 1 << 30), ("cut", blob[:-1], 1 << 30), ("bomb", blob, 1000)]:
            try:
                root = f"{sys.argv[3]}/{name}"
                __import__("os").mkdir(root)
                stats = apply_layer(root, data, media_type=streams.ZSTD_MEDIA_TYPE,
                                    options=ApplyOptions(max_bytes=limit))
                out[name] = stats.diff_id
            except RefError as err:
                out[name] = f"{type(err).__name__}: {err}"
        print(json.dumps(out))
    """)
    blob = zstd_compress(TAR) if ZSTD else b""
    if not blob:
        pytest.skip("needs the zstd program to make the blob in this venv")
    (scratch / "layer.zst").write_bytes(blob)
    done = subprocess.run([SYSTEM_PYTHON, "-I", "-c", script, str(REPO), str(scratch / "layer.zst"), str(scratch)],
                          capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    assert out["whole"] == f"sha256:{hashlib.sha256(TAR).hexdigest()}"
    assert out["cut"].startswith("LayerError") and "truncated zstd" in out["cut"]
    assert out["bomb"].startswith("LimitError") and "passes the limit" in out["bomb"]
    (scratch / "tar").mkdir()
    apply_layer(scratch / "tar", TAR)
    assert snapshot(scratch / "whole", nlink=True) == snapshot(scratch / "tar", nlink=True)


@pytest.mark.skipif(SKOPEO is None or ZSTD is None, reason="needs skopeo and the zstd program")
def test_skopeo_zstd_copy_applies_like_the_gzip_original(scratch: Path) -> None:
    """A layout whose layer skopeo recompressed (`--dest-compress-format zstd`) gives the same rootfs."""
    source = Layout.create(scratch / "gzip")
    source.add_image("t", [source.add_layer(TAR, compress=True)])
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-compress", "--dest-compress-format", "zstd",
                    f"oci:{scratch / 'gzip'}:t", f"oci:{scratch / 'zstd'}:t"], check=True, capture_output=True)
    copied = Layout(scratch / "zstd")
    manifest = copied.manifest(copied.resolve("t"))
    assert [layer.media_type for layer in manifest.layers] == [LAYER_ZSTD]
    with copied.open_blob(manifest.layers[0]) as reader:
        assert reader.read(4) == b"\x28\xb5\x2f\xfd", "a zstd frame"
    for name in ("gzip", "zstd"):
        (scratch / f"rootfs-{name}").mkdir()
        apply_image(scratch / name, "t", scratch / f"rootfs-{name}")
    assert snapshot(scratch / "rootfs-zstd", nlink=True) == snapshot(scratch / "rootfs-gzip", nlink=True)
    assert gzip.decompress((scratch / "gzip" / "blobs" / "sha256" / source.manifest(
        source.resolve("t")).layers[0].digest[7:]).read_bytes()) == TAR
    assert sys.version_info >= (3, 9)
