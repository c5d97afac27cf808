"""Namespaces: start-to-exit latency of a container running `true`, reference runtime vs runc, crun,
podman and docker, on the same busybox rootfs (one OCI bundle for ref, runc and crun; the same rootfs
imported as an image for the engines). `unshare` of the same namespaces is the floor.

- ref (library): `run_bundle()` called in this process: fork, namespaces, mounts, pivot_root, exec.
- ref (command): a fresh `python3 -S` calling run_bundle, as the probe starts it: interpreter start-up
  included, the fair comparison with `runc run`.
- runc / crun: `run --bundle B ID` (crun stops on hybrid cgroup hosts: reported as skipped).
- podman / docker: `run --rm --network none IMAGE /bin/true` (podman with a private store and runc).

Medians of --runs runs after one warm-up each, and each one's ratio to runc. Run as root (it mounts a
tmpfs and starts containers); everything is named conformance-bench-* and removed, also on Ctrl-C.
Usage: python bench/namespaces.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from scratch import scratch_tmpfs

from conformance.probe.appliers import docker_cli, podman_argv
from conformance.probe.ns_checks import busybox_rootfs

_ROOT = Path(__file__).resolve().parents[1]
_CODE = ("import sys; sys.path.insert(0, sys.argv[1]); from conformance.ref.runtime import run_bundle; "
         "sys.exit(run_bundle(sys.argv[2], sys.argv[3]))")


def median_ms(work: Callable[[], object], runs: int) -> float:
    """Median wall time of work() in milliseconds, after one warm-up call."""
    work()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def quiet(argv: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, capture_output=True, timeout=120, check=False, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}...: {done.stderr.decode(errors='replace').strip()[-300:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: containers and mounts need it")
    from conformance.ref.defaultspec import default_config  # noqa: PLC0415
    from conformance.ref.runtime import run_bundle  # noqa: PLC0415

    results: dict[str, float | str] = {}
    with scratch_tmpfs("namespaces", "256m") as root:
        rootfs = busybox_rootfs(str(root / "rootfs"))
        bundle = root / "bundle"
        bundle.mkdir()
        config = default_config(["/bin/true"])
        config["root"]["path"] = rootfs
        (bundle / "config.json").write_text(json.dumps(config))
        ids = iter(range(1_000_000))

        def cid() -> str:
            return f"conformance-bench-{os.getpid()}-{next(ids)}"

        devnull = os.open(os.devnull, os.O_WRONLY)
        results["unshare (floor)"] = median_ms(lambda: quiet(
            ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net", "--cgroup", "true"]), args.runs)
        results["ref (library)"] = median_ms(lambda: run_bundle(str(bundle), cid(), stdout=devnull, stderr=devnull),
                                             args.runs)
        results["ref (command)"] = median_ms(lambda: quiet(
            [sys.executable, "-S", "-c", _CODE, str(_ROOT), str(bundle), cid()]), args.runs)
        for tool in ("runc", "crun"):
            if shutil.which(tool) is None:
                results[tool] = "not installed"
                continue
            try:
                results[tool] = median_ms(lambda t=tool: quiet([t, "run", "--bundle", str(bundle), cid()]),  # type: ignore[misc]
                                          args.runs)
            except RuntimeError as err:
                results[tool] = f"skipped: {err}"
        with tarfile.open(root / "rootfs.tar", "w") as tar:
            tar.add(rootfs, arcname=".")
        image = f"conformance-bench-{os.getpid()}:latest"
        engines: list[tuple[str, list[str], dict[str, str], list[str]]] = []
        try:
            client, env = docker_cli()
            engines.append(("docker", [client], env, []))
        except Exception as err:  # NotApplicable and friends: reported, not fatal
            results["docker"] = f"skipped: {err}"
        # podman refuses a runroot longer than 50 characters: its store gets a short dir of its own
        store = Path(f"/tmp/conformance-bp-{os.getpid()}")
        if shutil.which("podman"):
            store.mkdir(mode=0o700)
            engines.append(("podman", podman_argv(str(store)), {},
                            ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]))
        for name, argv, env, flags in engines:
            try:
                quiet([*argv, "import", str(root / "rootfs.tar"), image], env)
                results[name] = median_ms(lambda a=argv, e=env, f=flags: quiet(  # type: ignore[misc]
                    [*a, "run", "--rm", "--network", "none", *f, image, "/bin/true"], e), args.runs)
            except RuntimeError as err:
                results[name] = f"skipped: {err}"
            finally:
                subprocess.run([*argv, "rmi", "-f", image], capture_output=True, check=False, env={**os.environ, **env})
                if name == "podman":
                    subprocess.run([*argv, "system", "reset", "--force"], capture_output=True, check=False)
                    subprocess.run(["umount", "-R", "-l", str(store)], capture_output=True, check=False)
                    shutil.rmtree(store, ignore_errors=True)
        os.close(devnull)
    runc = results.get("runc")
    print(f"start-to-exit of `true`, median of {args.runs} (ratio to runc):")
    for name, value in results.items():
        if isinstance(value, float):
            ratio = f"{value / runc:5.2f}x" if isinstance(runc, float) else "  -  "
            print(f"  {name:<16} {value:8.1f} ms  {ratio}")
        else:
            print(f"  {name:<16} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
