"""Overlay: scenarios per second through the reference model and through the kernel; mount + umount cost
with 1, 10 and 100 lower layers; and the largest number of lower layers this kernel accepts.

Everything happens on a tmpfs mounted at /tmp/conformance-bench-overlay-<random> (as root), unmounted
and removed on the way out, also on Ctrl-C.

- mounts: --repeat times mount(2) of an overlay of N empty lower dirs (plus an upper and a work dir)
  and umount(2) of it, for N in 1, 10, 100; medians in microseconds.
- max lowers: the largest N for which the mount succeeds, found by bisection (relative lower dir
  names, from the tmpfs as working directory, so the one-page limit on mount data is not what stops it).
- scenarios: a fixed mix of overlay scenarios (copy-up, whiteout, opaque dir, rename, readdir), --count
  of them in one probe call, through implementation "ref" (the model, no mount), "kernel" (a mount per
  scenario) and "fuse-overlayfs" where it is installed (a FUSE daemon per scenario); scenarios per
  second for each, and each one's throughput as a ratio to the kernel's.

Ratios, not absolute times, are what to compare. Usage: python bench/overlay.py [--repeat 50] [--count 200]
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from scratch import scratch_tmpfs

from conformance.hosts import resolve
from conformance.probe import syscalls
from conformance.scenarios import Scenario, overlay
from conformance.transport import ProbeClient, ProbeError


def mount_overlay(base: Path, lowers: int) -> str:
    """Mount an overlay of `lowers` empty dirs named 0..N-1 under base/l (relative names); its mount point."""
    for n in range(lowers):
        (base / "l" / str(n)).mkdir(parents=True, exist_ok=True)
    for name in ("u", "w", "m"):
        (base / name).mkdir(exist_ok=True)
    names = ":".join(f"l/{n}" for n in range(lowers))
    syscalls.mount("overlay", "m", "overlay", 0, f"lowerdir={names},upperdir=u,workdir=w")
    return str(base / "m")


def mount_cost(base: Path, lowers: int, repeat: int) -> float:
    """Median microseconds of one mount plus umount with `lowers` lower dirs."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        point = mount_overlay(base, lowers)
        syscalls.umount(point)
        times.append(time.perf_counter() - started)
        shutil.rmtree(base / "w")
    return statistics.median(times) * 1e6


def accepts(base: Path, lowers: int) -> bool:
    try:
        point = mount_overlay(base, lowers)
    except OSError as err:
        if err.errno in (errno.EINVAL, errno.E2BIG, errno.ENOMEM):
            return False
        raise
    syscalls.umount(point)
    shutil.rmtree(base / "w")
    return True


def max_lowers(base: Path, ceiling: int = 4096) -> int:
    """The largest number of lower dirs the kernel mounts (bisection between 1 and ceiling)."""
    low, high = 1, ceiling
    if accepts(base, high):
        return high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if accepts(base, middle) else (low, middle)
    return low


def scenario_mix(count: int) -> list[Scenario]:
    """A repeated mix of the operations property tests generate most."""
    base: list[list[dict[str, Any]]] = [[{"name": "d", "type": "dir"}, {"name": "d/x", "type": "file", "content": "x"},
             {"name": "a", "type": "file", "content": "a", "mode": 0o600}]]
    mix = [
        overlay.run(base, [{"op": "append", "path": "a", "content": "b"}]),
        overlay.run(base, [{"op": "unlink", "path": "d/x"}, {"op": "readdir", "path": "d"}]),
        overlay.run(base, [{"op": "unlink", "path": "d/x"}, {"op": "rmdir", "path": "d"},
                           {"op": "mkdir", "path": "d", "mode": 0o755}]),
        overlay.run(base, [{"op": "rename", "path": "a", "to": "b"}, {"op": "stat", "path": "b"}]),
        overlay.run(base, [{"op": "chmod", "path": "a", "mode": 0o644}, {"op": "readdir", "path": ""}]),
    ]
    return [mix[n % len(mix)] for n in range(count)]


def scenarios_per_second(client: ProbeClient, implementation: str, count: int) -> float:
    scenarios = scenario_mix(count)
    started = time.perf_counter()
    observations = client.call(scenarios, implementation, timeout=600)
    elapsed = time.perf_counter() - started
    failed = [o.error for o in observations if not o.ok]
    if failed:
        raise ProbeError(f"{implementation}: {len(failed)} scenarios crashed, e.g. {(failed[0] or {}).get('error')}")
    return count / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: the script mounts tmpfs and overlay")
    with scratch_tmpfs("overlay", "256m") as root:
        os.chdir(root)
        print("mount + umount of an overlay, median of", args.repeat)
        for lowers in (1, 10, 100):
            base = root / f"cost{lowers}"
            base.mkdir()
            os.chdir(base)
            print(f"  {lowers:>3} lowers: {mount_cost(base, lowers, args.repeat):8.0f} us")
        base = root / "max"
        base.mkdir()
        os.chdir(base)
        print(f"largest number of lower layers this kernel ({os.uname().release}) accepts: {max_lowers(base)}")
        os.chdir(root)
    [host] = resolve(["local://"])
    client = ProbeClient(host, f"benchovl{os.getpid()}", 600.0)
    try:
        impls = ["ref", "kernel"] + (["fuse-overlayfs"] if shutil.which("fuse-overlayfs") else [])
        rates = {impl: scenarios_per_second(client, impl, args.count) for impl in impls}
    except ProbeError as err:
        print(f"scenarios: skipped ({err})")
        return 0
    finally:
        client.remove_bundle()
    print(f"scenarios per second ({args.count} in one probe call), and the throughput as a ratio to the kernel's:")
    for impl, rate in rates.items():
        print(f"  {impl:<15} {rate:8.0f}/s  {rate / rates['kernel']:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
