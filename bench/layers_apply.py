"""Layer apply and layer digest: the reference implementation vs GNU tar, umoci and openssl.

One generated layer (seeded, so every run builds the same files): --files regular files totalling
--bytes bytes in --dirs directories, tarred by GNU tar (pax format), and stored as the only layer of
an image in an OCI layout written with conformance.ref.layout.Layout. All of it lives on a tmpfs the
script mounts at /tmp/conformance-bench-<random> (as root), so the disk is not what is measured; the
tmpfs is unmounted and removed on the way out, also on Ctrl-C.

Each side runs --repeat times into a fresh empty directory on that tmpfs:
  apply:  conformance.ref.layers.apply_layer of the tar, `tar -xf` (GNU tar), `umoci raw unpack` of
          the layout (the rootfs only: no runtime bundle, no mtree manifest);
  digest: sha256 of the tar read in the ref's CHUNK-sized pieces (as blob verification reads), vs
  `openssl dgst -sha256`;
  zstd:   the tar compressed with `zstd -3`, decoded and hashed for its DiffID by the ref's TarStream (as
          apply_image's verify pass reads a layer), vs `zstd -dc | openssl dgst -sha256`. The ref decodes
          with the zstandard module where this python has it (Debian's python3-zstandard, for
          /usr/bin/python3), else through the zstd program; the line says which. Skipped without zstd.
Prints medians and the ratios ref/tar, ref/umoci, digest ref/openssl and zstd ref/program, and whether the
issue's targets (ref apply within 2x of GNU tar; ref digest within 10% of openssl) are met on this host.
Ratios, not absolute times, are what to compare; on a busy host, run with a larger --repeat.

Usage: python bench/layers_apply.py [--files 20000] [--bytes 200000000] [--dirs 200] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from conformance.ref.digest import digest_bytes
from conformance.ref.layers import ApplyOptions, apply_layer
from conformance.ref.layout import Layout
from conformance.ref.oci import LAYER_TAR
from conformance.ref.streams import CHUNK, HashingReader, TarStream, zstd_module

REF = "bench"
TAR_TARGET = 2.0  # ref apply within 2x of GNU tar
DIGEST_TARGET = 1.10  # ref digest within 10% of openssl



def streamed_digest(path: Path) -> str:
    """sha256 of a file read the way the ref verifies blobs: CHUNK-sized reads into hashlib."""
    h = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"

def ref_zstd_diff_id(path: Path) -> str:
    """The DiffID of a zstd layer as the ref computes it: decoded piecewise, bounded, hashed."""
    with path.open("rb") as handle:
        stream = TarStream(HashingReader(handle), "zstd", 1 << 40, "bench")
        try:
            stream.drain()
        finally:
            stream.close()
        return stream.diff_id()


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def tmpfs(size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes at /tmp/conformance-bench-<random>; unmounted and removed on exit."""
    mountpoint = Path(f"/tmp/conformance-bench-{secrets.token_hex(4)}")
    mountpoint.mkdir(mode=0o700)
    mounted = False
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "conformance-bench",
                        str(mountpoint)], check=True)
        mounted = True
        yield mountpoint
    finally:
        if mounted and subprocess.run(["umount", str(mountpoint)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        mountpoint.rmdir()


def generate(source: Path, files: int, total: int, dirs: int, seed: int) -> None:
    """`files` files of random sizes (summing to `total`) and random content in `dirs` directories."""
    rng = random.Random(seed)
    cuts = sorted(rng.randrange(total + 1) for _ in range(files - 1))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
    for d in range(dirs):
        (source / f"d{d:04d}").mkdir(parents=True)
    for i, size in enumerate(sizes):
        path = source / f"d{i % dirs:04d}" / f"f{i:06d}"
        path.write_bytes(rng.randbytes(size))
        path.chmod(0o644 if i % 7 else 0o755)


def build_tar(source: Path, tar: Path) -> None:
    """An uncompressed, reproducible pax tar of `source` (GNU tar)."""
    subprocess.run(["tar", "--format=pax", "--sort=name", "--mtime=@0", "--owner=0", "--group=0",
                    "--numeric-owner", "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                    "-cf", str(tar), "-C", str(source), "."], check=True)


def build_layout(tar: Path, layout_dir: Path) -> None:
    """An OCI layout with one image (ref "bench") whose only layer is `tar`."""
    layout = Layout.create(layout_dir)
    with tar.open("rb") as stream:
        descriptor = layout.add_blob(stream, LAYER_TAR)
    layout.add_image(REF, [(descriptor, descriptor.digest)])


def timed(work: Callable[[], object]) -> float:
    """Seconds `work` took."""
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def median_apply(scratch: Path, repeat: int, apply: Callable[[Path], object]) -> float:
    """Median of `repeat` applies, each into a fresh empty directory (removed afterwards, untimed)."""
    times = []
    for _ in range(repeat):
        target = scratch / "rootfs"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        times.append(timed(lambda t=target: apply(t)))  # type: ignore[misc]
        shutil.rmtree(target)
    return statistics.median(times)


def run(args: argparse.Namespace) -> None:
    """Build the layer on a tmpfs, time every side and print the comparison."""
    # source files + tar + layout blob + one extracted rootfs, plus headers and slack
    size = 4 * args.bytes + args.files * 8192 + (256 << 20)
    with tmpfs(size) as root:
        print(f"layer: {args.files} files, {args.bytes / 1e6:.0f} MB, {args.dirs} directories; "
              f"tmpfs {root}; repeat {args.repeat}")
        started = time.perf_counter()
        generate(root / "source", args.files, args.bytes, args.dirs, args.seed)
        tar = root / "layer.tar"
        build_tar(root / "source", tar)
        shutil.rmtree(root / "source")
        build_layout(tar, root / "layout")
        print(f"built tar ({tar.stat().st_size / 1e6:.1f} MB) and layout in {time.perf_counter() - started:.1f} s")

        options = ApplyOptions()

        def ref_apply(target: Path) -> None:
            with tar.open("rb") as stream:
                apply_layer(target, stream, media_type=LAYER_TAR, options=options)

        ref = median_apply(root, args.repeat, ref_apply)
        gnu = median_apply(root, args.repeat, lambda t: subprocess.run(
            ["tar", "-xf", str(tar), "-C", str(t)], check=True))
        umoci = median_apply(root, args.repeat, lambda t: subprocess.run(
            ["umoci", "raw", "unpack", "--image", f"{root / 'layout'}:{REF}", str(t / "rootfs")],
            check=True, capture_output=True))

        expected = digest_bytes(tar.read_bytes())
        assert streamed_digest(tar) == expected
        ref_digest = statistics.median(timed(lambda: streamed_digest(tar)) for _ in range(args.repeat))
        out = subprocess.run(["openssl", "dgst", "-sha256", "-r", str(tar)], check=True, capture_output=True,
                             text=True).stdout
        if f"sha256:{out.split()[0]}" != expected:
            raise SystemExit(f"openssl and conformance.ref.digest disagree: {out.split()[0]} vs {expected}")
        openssl = statistics.median(timed(lambda: subprocess.run(
            ["openssl", "dgst", "-sha256", str(tar)], check=True, stdout=subprocess.DEVNULL))
            for _ in range(args.repeat))

        zstd = None
        if shutil.which("zstd"):
            packed = root / "layer.tar.zst"
            subprocess.run(["zstd", "-3", "-q", "-T0", "-o", str(packed), str(tar)], check=True)
            if ref_zstd_diff_id(packed) != expected:
                raise SystemExit("the ref's zstd DiffID is not the tar's digest")
            ref_zstd = statistics.median(timed(lambda: ref_zstd_diff_id(packed)) for _ in range(args.repeat))
            program = statistics.median(timed(lambda: subprocess.run(
                f"zstd -dc -q {packed} | openssl dgst -sha256", shell=True, check=True, stdout=subprocess.DEVNULL))
                for _ in range(args.repeat))
            zstd = (ref_zstd, program, packed.stat().st_size)

    print(f"apply  (median of {args.repeat}): ref apply_layer {ref * 1000:.0f} ms, GNU tar -xf {gnu * 1000:.0f} ms, "
          f"umoci raw unpack {umoci * 1000:.0f} ms")
    print(f"digest (median of {args.repeat}): ref streamed sha256 {ref_digest * 1000:.0f} ms, "
          f"openssl dgst -sha256 {openssl * 1000:.0f} ms")
    if zstd is not None:
        decoder = "zstandard module" if zstd_module() is not None else "zstd program through a pipe"
        print(f"zstd   (median of {args.repeat}, {zstd[2] / 1e6:.1f} MB): ref decode + DiffID ({decoder}) "
              f"{zstd[0] * 1000:.0f} ms, zstd -dc | openssl dgst -sha256 {zstd[1] * 1000:.0f} ms")
    print(f"ratio ref/tar {ref / gnu:.2f}, ref/umoci {ref / umoci:.2f}, digest ref/openssl {ref_digest / openssl:.2f}"
          + (f", zstd ref/program {zstd[0] / zstd[1]:.2f}" if zstd is not None else ""))
    print(f"target: ref apply within {TAR_TARGET:.0f}x of GNU tar: {'MET' if ref / gnu <= TAR_TARGET else 'NOT MET'}")
    print(f"target: ref digest within {round((DIGEST_TARGET - 1) * 100)}% of openssl: "
          f"{'MET' if ref_digest / openssl <= DIGEST_TARGET else 'NOT MET'}")


def main() -> None:
    """Parse options and run."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--bytes", type=int, default=200_000_000)
    parser.add_argument("--dirs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2,000 files / 20 MB")
    args = parser.parse_args()
    if args.quick:
        args.files, args.bytes = 2_000, 20_000_000
    if os.geteuid() != 0:
        raise SystemExit("mounting the tmpfs needs root")
    signal.signal(signal.SIGTERM, _interrupted)
    run(args)


if __name__ == "__main__":
    main()
