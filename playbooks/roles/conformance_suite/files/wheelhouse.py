#!/usr/bin/env python3
"""Build, on the controller, the wheels a host needs to install the suite without an index.

A tested host may have no route to PyPI, and its python3 may be another version than the
controller's. This script builds the project's wheel from the checkout, downloads binary wheels of
its dependencies (and of pip itself) for the host's Python version and platform, and packs them into
one deterministic tar archive that the role copies to the host and installs from with ``--no-index``.

Everything is cached under ``--cache``, so a second call with the same sources and target does no
work and answers ``"changed": false``:

    project/<source digest>/container_conformance-*.whl   the project, per content of its sources
    deps/<requirements digest>/*.whl                      dependencies + pip, per target and pyproject
    archives/<wheelhouse digest>.tar                      what goes to hosts (the last few kept)

The wheelhouse digest covers each wheel's name and sha256, so it changes exactly when a host's venv
must change; the role stores it in the venv as a stamp. Prints one JSON object on stdout:
``{"changed", "digest", "archive", "pip", "wheels"}``. Exit 1 with a message on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

# Files outside the package that go into the project's wheel (metadata, readme).
PROJECT_FILES = ("pyproject.toml", "README.md", "setup.cfg", "setup.py", "MANIFEST.in", "LICENSE")
PACKAGE = "conformance"
PIP_TIMEOUT_S = 900
KEEP_ARCHIVES = 4
KEEP_PROJECT_WHEELS = 8
# manylinux_2_5 is the oldest glibc tag; the legacy names are aliases pip still finds wheels under.
OLDEST_GLIBC_MINOR = 5
LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


class WheelhouseError(Exception):
    """A step failed; the message says which and what to do."""


def main(argv: list[str] | None = None) -> int:
    """Parse the target, build or reuse the wheelhouse, print the JSON answer."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, required=True, help="the checkout (where pyproject.toml is)")
    parser.add_argument("--cache", type=Path, required=True, help="the controller's wheelhouse cache")
    parser.add_argument("--target", required=True,
                        help="the host's Python: VERSION/PLATFORM/LIBC-VERSION, e.g. 3.11/linux-x86_64/glibc-2.36")
    args = parser.parse_args(argv)
    try:
        answer = build(args.project.resolve(), args.cache, args.target)
    except WheelhouseError as exc:
        print(f"wheelhouse: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


def build(project: Path, cache: Path, target: str) -> dict[str, object]:
    """The wheelhouse for one target: built when missing, else taken from the cache."""
    version, platforms = parse_target(target)
    cache.mkdir(parents=True, exist_ok=True)
    with locked(cache / ".lock"):
        changed = False
        project_wheel, built = project_wheel_for(project, cache / "project")
        changed |= built
        deps, built = dependencies_for(project, cache / "deps", version, platforms)
        changed |= built
        wheels = sorted([project_wheel, *deps], key=lambda p: p.name)
        digest = wheelhouse_digest(wheels)
        archive = cache / "archives" / f"{digest}.tar"
        if not archive.exists():
            write_archive(archive, wheels)
            changed = True
        archive.touch()  # recently used: kept by prune()
        prune(cache / "archives", KEEP_ARCHIVES)
        prune(cache / "project", KEEP_PROJECT_WHEELS)
    pip = [w.name for w in wheels if w.name.startswith("pip-")]
    if not pip:
        raise WheelhouseError(f"no pip wheel among the dependencies in {deps[0].parent if deps else cache}")
    return {"changed": changed, "digest": digest, "archive": str(archive), "pip": pip[0],
            "wheels": [w.name for w in wheels]}


def parse_target(target: str) -> tuple[str, list[str]]:
    """The Python version and the pip --platform tags a host of this kind can install."""
    try:
        version, platform, libc = target.split("/")
        libc_name, libc_version = libc.split("-", 1)
        major, minor = (int(part) for part in version.split("."))
        glibc_major, glibc_minor = (int(part) for part in libc_version.split(".")[:2])
    except ValueError:
        raise WheelhouseError(f"bad --target {target!r}: expected VERSION/PLATFORM/LIBC-VERSION, "
                              "e.g. 3.11/linux-x86_64/glibc-2.36") from None
    if not platform.startswith("linux-") or libc_name != "glibc" or glibc_major != 2:
        raise WheelhouseError(f"unsupported host platform {platform} with {libc}: wheels are fetched for "
                              "glibc Linux hosts only (manylinux)")
    arch = platform.removeprefix("linux-")
    tags = []
    for glibc in range(glibc_minor, OLDEST_GLIBC_MINOR - 1, -1):
        tags.append(f"manylinux_2_{glibc}_{arch}")
        if glibc in LEGACY_MANYLINUX:
            tags.append(f"{LEGACY_MANYLINUX[glibc]}_{arch}")
    return f"{major}.{minor}", tags


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock: two playbooks (or test workers) filling one cache take turns."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def project_sources(project: Path) -> list[Path]:
    """What the project's wheel is built from, relative to the checkout, in a stable order."""
    if not (project / "pyproject.toml").is_file():
        raise WheelhouseError(f"{project} has no pyproject.toml: conformance_suite_project_dir must be the checkout")
    files = [Path(name) for name in PROJECT_FILES if (project / name).is_file()]
    for path in sorted((project / PACKAGE).rglob("*")):
        rel = path.relative_to(project)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix not in {".pyc", ".pyo"}:
            files.append(rel)
    return files


def project_wheel_for(project: Path, store: Path) -> tuple[Path, bool]:
    """The project's wheel for the current sources; built (in a copy of them) when they changed."""
    sources = project_sources(project)
    digest = hashlib.sha256()
    for rel in sources:
        digest.update(f"{rel}\0".encode())
        digest.update(hashlib.sha256((project / rel).read_bytes()).digest())
    folder = store / digest.hexdigest()[:24]
    if wheels := sorted(folder.glob("*.whl")):
        folder.touch()
        return wheels[0], False
    with tempfile.TemporaryDirectory(prefix="wheelhouse-build-") as tmp:
        # Building from a copy keeps build/ and *.egg-info out of the checkout, and the wheel holds
        # exactly the files hashed above.
        src = Path(tmp) / "src"
        for rel in sources:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(project / rel, src / rel)
        out = Path(tmp) / "out"
        pip(["wheel", "--no-deps", "--wheel-dir", str(out), str(src)], what="build the project's wheel")
        built = sorted(out.glob("*.whl"))
        if len(built) != 1:
            raise WheelhouseError(f"pip wheel made {len(built)} wheels, expected one: {[w.name for w in built]}")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.move(str(built[0]), folder / built[0].name)
    return folder / built[0].name, True


def dependencies_for(project: Path, store: Path, version: str, platforms: list[str]) -> tuple[list[Path], bool]:
    """Binary wheels of the project's dependencies and of pip, for the target; downloaded once."""
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    requirements = [*pyproject["project"].get("dependencies", []), "pip"]
    key = json.dumps({"requirements": requirements, "python": version, "platforms": platforms}, sort_keys=True)
    folder = store / f"cp{version.replace('.', '')}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"
    if (folder / ".complete").exists():
        return sorted(folder.glob("*.whl")), False
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=store.parent))
    try:
        platform_args = [arg for tag in platforms for arg in ("--platform", tag)]
        pip(["download", "--only-binary=:all:", "--implementation", "cp", "--python-version", version,
             *platform_args, "--dest", str(tmp), *requirements],
            what=f"download the dependencies' wheels for Python {version} ({platforms[0]})")
        (tmp / ".complete").write_text(key + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(folder.glob("*.whl")), True


def pip(args: list[str], what: str) -> None:
    """Run the controller's pip; a failure names the step and shows pip's own words."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise WheelhouseError(f"could not {what}: pip took more than {PIP_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise WheelhouseError(
            f"could not {what} (pip exited {done.returncode}; the controller needs the package index or "
            f"PIP_FIND_LINKS with these wheels):\n{done.stderr.strip()[-3000:]}"
        )


def wheelhouse_digest(wheels: list[Path]) -> str:
    """sha256 over each wheel's name and content digest: equal exactly when the venv would be."""
    lines = "".join(f"{hashlib.sha256(w.read_bytes()).hexdigest()}  {w.name}\n" for w in wheels)
    return hashlib.sha256(lines.encode()).hexdigest()


def write_archive(archive: Path, wheels: list[Path]) -> None:
    """A tar of the wheels that is byte-for-byte the same for the same wheels (so copy sees no change)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_suffix(f".tmp{os.getpid()}")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for wheel in wheels:
            data = wheel.read_bytes()
            info = tarfile.TarInfo(wheel.name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tmp.rename(archive)


def prune(store: Path, keep: int) -> None:
    """Remove all but the `keep` most recently used entries of a cache folder."""
    if not store.is_dir():
        return
    entries = sorted(store.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
