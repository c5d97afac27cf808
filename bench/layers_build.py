"""Building an image from a Containerfile: the reference builder vs `docker build` and `podman build`.

One generated context (seeded, so every run builds the same files): --files small files in --dirs
directories under app/, plus a tar of the same size for ADD, and a Containerfile of FROM scratch,
COPY app/ /app/, ENV, ADD data.tar /data/, LABEL, CMD. Each builder makes the image --repeat times
from nothing (no cache: the ref with --no-cache semantics, docker and podman with --no-cache), and the
script prints the medians and the ratios ref/docker and ref/podman. docker is Debian's 20.10 with the
classic builder (DOCKER_BUILDKIT=0; BuildKit needs buildx, which the distribution does not ship);
podman builds into a private store on the same tmpfs (overlay storage, runc).

Everything lives on a tmpfs mounted at /tmp/conformance-bench-build-<random> (as root), and every
image is named conformance-bench-*; both are removed on the way out, also on Ctrl-C.
Ratios, not absolute times, are what to compare.

Usage: python bench/layers_build.py [--files 2000] [--dirs 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import secrets
import shutil
import statistics
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from scratch import scratch_tmpfs

from conformance.probe.actions import NotApplicable
from conformance.probe.appliers import docker_cli, podman_argv
from conformance.ref.build import build_image

CONTAINERFILE = """FROM scratch
COPY app/ /app/
ENV GREETING=hello
ADD data.tar /data/
LABEL org.example.bench=yes
CMD ["/app/run"]
"""


def make_context(root: Path, files: int, dirs: int) -> Path:
    """app/ with `files` files of 0-8 KiB in `dirs` directories, and data.tar holding as many."""
    rng = random.Random(42)
    context = root / "context"
    for n in range(files):
        path = context / "app" / f"d{n % dirs:03d}" / f"f{n:05d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randrange(8192)))
    (context / "app" / "run").write_text("#!/bin/sh\n")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for n in range(files):
            data = rng.randbytes(rng.randrange(8192))
            info = tarfile.TarInfo(f"t{n % dirs:03d}/f{n:05d}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (context / "data.tar").write_bytes(buffer.getvalue())
    (context / "Containerfile").write_text(CONTAINERFILE)
    (context / "Dockerfile").write_text(CONTAINERFILE)
    return context


def timed(repeat: int, run: Callable[[int], object]) -> float:
    """The median wall time of `repeat` runs, in seconds."""
    times = []
    for n in range(repeat):
        started = time.perf_counter()
        run(n)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--dirs", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: the script mounts a tmpfs and talks to the docker daemon")
    with scratch_tmpfs("build", "4g") as root:
        context = make_context(root, args.files, args.dirs)
        results: dict[str, float] = {}
        results["ref"] = timed(args.repeat, lambda n: build_image(context / "Containerfile", context,
                                                                 root / f"ref-{n}", "bench"))
        names: list[str] = []
        try:
            client, env = docker_cli()
        except NotApplicable as exc:
            print(f"docker: skipped ({exc})")
        else:
            environ = {**os.environ, **env, "DOCKER_BUILDKIT": "0"}

            def docker(n: int) -> None:
                names.append(f"conformance-bench-{secrets.token_hex(3)}:{n}")
                subprocess.run([client, "build", "-q", "--no-cache", "--network", "none", "-t", names[-1],
                                str(context)], env=environ, check=True, capture_output=True)

            try:
                results["docker"] = timed(args.repeat, docker)
            finally:
                for name in names:
                    subprocess.run([client, "rmi", "-f", name], env=environ, check=False, capture_output=True)
        if shutil.which("podman"):
            podman = podman_argv(str(root / "p"))  # short: podman refuses a runroot path over 50 characters
            try:
                results["podman"] = timed(args.repeat, lambda n: subprocess.run(
                    [*podman, "build", "-q", "--no-cache", "--network", "none", "-t", f"conformance-bench:{n}",
                     str(context)], check=True, capture_output=True))
            finally:
                subprocess.run([*podman, "system", "reset", "--force"], check=False, capture_output=True)
    print(f"build of {args.files} + {args.files} files (COPY, ADD and four metadata steps), median of {args.repeat}:")
    for name, seconds in results.items():
        print(f"  {name:7} {seconds * 1000:8.0f} ms")
    for peer in ("docker", "podman"):
        if peer in results:
            print(f"  ratio ref/{peer}: {results['ref'] / results[peer]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
