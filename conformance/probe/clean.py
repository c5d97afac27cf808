"""Sweep what runs left behind: every mount, cgroup, netns and scratch dir named conformance-.

A run cleans up after itself, also on error, timeout and Ctrl-C; this is for the run that was killed
with SIGKILL or lost its host mid-way. `run_id` limits the sweep to one run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from typing import Any

from conformance import PREFIX
from conformance.probe import cgroupfs, syscalls
from conformance.probe.actions import Context, action

JsonDict = dict[str, Any]


def _matches(name: str, run_id: str | None) -> bool:
    return name.startswith(PREFIX + (run_id or ""))


#: Where runs make mounts and files; nothing elsewhere is touched, whatever its name.
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/run/netns", "/dev/shm")  # /dev/shm: ref run and build scratch


def _in_scratch(path: str, run_id: str | None) -> bool:
    return any(path.startswith(f"{base}/{PREFIX}{run_id or ''}") for base in SCRATCH_DIRS)


def leftover_mounts(run_id: str | None = None) -> list[str]:
    """Mount points in a prefixed scratch dir, deepest first."""
    found: list[str] = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            mountpoint = line.split()[4].replace("\\040", " ")
            if _in_scratch(mountpoint, run_id):
                found.append(mountpoint)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def leftover_cgroups(run_id: str | None = None) -> list[str]:
    """Prefixed cgroups directly under each hierarchy's root, where runs make them (and nowhere deeper)."""
    found: list[str] = []
    for h in cgroupfs.hierarchies():
        with contextlib.suppress(OSError):
            found.extend(os.path.join(h.mountpoint, d) for d in os.listdir(h.mountpoint)
                         if _matches(d, run_id) and os.path.isdir(os.path.join(h.mountpoint, d)))
    return sorted(found)


def leftover_paths(run_id: str | None = None, dirs: tuple[str, ...] = SCRATCH_DIRS) -> list[str]:
    """Scratch dirs, probe bundles and netns files with the prefix."""
    found: list[str] = []
    for base in dirs:
        with contextlib.suppress(OSError):
            found.extend(os.path.join(base, n) for n in os.listdir(base) if _matches(n, run_id))
    return sorted(found)


def docker_env() -> dict[str, str] | None:
    """DOCKER_HOST of the daemon that answers here, if any."""
    from conformance.probe.actions import NotApplicable  # noqa: PLC0415
    from conformance.probe.appliers import docker_cli  # noqa: PLC0415

    try:
        return docker_cli()[1]
    except NotApplicable:
        return None


def leftover_engine_objects(run_id: str | None = None) -> list[list[str]]:
    """What a killed run left in the engines and runtimes: the argv that removes each.

    Docker containers and images, runc and crun containers (podman's stores live in scratch dirs).
    """
    from conformance.probe.actions import NotApplicable  # noqa: PLC0415
    from conformance.probe.appliers import docker_cli  # noqa: PLC0415

    try:
        client, env = docker_cli()
    except NotApplicable:
        return leftover_oci_containers(run_id)
    found: list[list[str]] = leftover_oci_containers(run_id)
    environ = {**os.environ, **env}
    for listing, remove in ((["ps", "-a", "--format", "{{.Names}}"], ["rm", "-f"]),
                            (["images", "--format", "{{.Repository}}:{{.Tag}}"], ["rmi", "-f"])):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run([client, *listing], capture_output=True, text=True, timeout=30, check=False,
                                  env=environ)
            found += [[client, *remove, name] for name in done.stdout.split() if _matches(name, run_id)]
    return found


def leftover_oci_containers(run_id: str | None = None) -> list[list[str]]:
    """The runc and crun containers of a killed run (their state outlives them): `delete --force` argv each."""
    found: list[list[str]] = []
    for tool in ("runc", "crun"):
        if shutil.which(tool) is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run([tool, "list", "-q"], capture_output=True, text=True, timeout=30, check=False)
            found += [[tool, "delete", "--force", name] for name in done.stdout.split() if _matches(name, run_id)]
    return found


def sweep(run_id: str | None = None, dry_run: bool = False, keep: tuple[str, ...] = ()) -> JsonDict:
    """Remove leftovers; returns what was found, removed, and what could not be removed and why.

    Paths in keep (the probe's own bundle and scratch dir) and everything below them are left alone.
    """

    def kept(path: str) -> bool:
        return any(path == k or path.startswith(k.rstrip("/") + "/") for k in keep)

    report: JsonDict = {"mounts": [m for m in leftover_mounts(run_id) if not kept(m)],
                        "cgroups": leftover_cgroups(run_id),
                        "paths": [p for p in leftover_paths(run_id) if not kept(p)], "problems": []}
    engine = leftover_engine_objects(run_id)
    report["engine"] = [" ".join(argv[1:]) for argv in engine]
    if dry_run:
        return report
    for argv in engine:  # containers first, then their images: the listing keeps that order
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, **(docker_env() or {})})
        if done.returncode != 0:
            report["problems"].append(f"{' '.join(argv[1:])}: {done.stderr.strip()}")
    for mountpoint in report["mounts"]:
        try:
            syscalls.umount(mountpoint, syscalls.MNT_DETACH)
        except OSError as exc:
            report["problems"].append(f"umount {mountpoint}: {exc}")
    for path in report["cgroups"]:
        try:
            cgroupfs.remove_cgroup(path)
        except OSError as exc:
            report["problems"].append(f"rmdir {path}: {exc}")
    for path in report["paths"]:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError as exc:
            report["problems"].append(f"remove {path}: {exc}")
    return report


@action("clean.sweep")
def clean_action(params: JsonDict, ctx: Context) -> JsonDict:
    """Sweep as a probe action; the probe's own bundle and scratch are kept while it runs."""
    keep = (*params.get("keep", ()), ctx.sandbox.root)
    return sweep(params.get("run_id"), bool(params.get("dry_run", False)), keep)
