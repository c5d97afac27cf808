"""The controller side of a probe: ship the probe to a host once, then send it batches of scenarios.

The probe (conformance/probe, and conformance/ref for the reference implementations) is zipped into
one .pyz and written to /tmp/conformance-<run>-<host>-probe-<digest>.pyz on the host (the client's
run_id is the host-side id, selection.host_side_id), so a host needs only a
python3, not this package installed. The digest in the name lets a later call skip the upload.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import secrets
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from conformance import PREFIX
from conformance.hosts import Host, HostError
from conformance.scenarios import Observation, Scenario

#: What goes into the probe zip: the package marker, the probe and the reference implementations.
BUNDLED = ("__init__.py", "probe", "ref")
#: The zip's __main__.py. It unpacks the zip once, beside it (<name>.d, 0700, ours), and runs from there:
#: imports from a zip compile every module on every call (Python keeps no bytecode for them), which costs
#: seconds per probe call on a slow, emulated host; from a directory the bytecode is compiled once.
_BOOT = """import os, sys


def _unpacked(pyz):
    target = pyz[: -len(".pyz")] + ".d"
    if not os.path.isdir(target):
        import zipfile
        old = os.umask(0o077)
        part = "%s.%d.part" % (target, os.getpid())
        try:
            with zipfile.ZipFile(pyz) as archive:
                archive.extractall(part)
            os.rename(part, target)
        except OSError:
            import shutil
            shutil.rmtree(part, ignore_errors=True)
        finally:
            os.umask(old)
    st = os.lstat(target)
    if st.st_uid != os.getuid() or st.st_mode & 0o022 or not os.path.isdir(target):
        raise OSError("not ours: " + target)
    return target


if sys.path[0].endswith(".pyz"):
    try:
        sys.path[0] = _unpacked(sys.path[0])
        sys.dont_write_bytecode = False
    except OSError:
        pass
from conformance.probe.__main__ import main
sys.exit(main(sys.argv))
"""
_ARG_LIMIT = 96 * 1024  # stay well under the kernel's 128 KiB limit on one argument
_SETUP_TIMEOUT = 60.0


class ProbeError(HostError):
    """The probe ran but failed as a program (crash, bad answer): a harness error, not a verdict."""


class ProbeTimeout(ProbeError):
    """The probe did not finish within its timeout; it was stopped on the host and cleaned up."""


def build_bundle(package_dir: Path | None = None) -> bytes:
    """Zip the host-side code deterministically (fixed timestamps) so its digest names its content."""
    root = package_dir or Path(__file__).resolve().parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("__main__.py", (1980, 1, 1, 0, 0, 0)), _BOOT)
        for entry in BUNDLED:
            path = root / entry
            files = [path] if path.is_file() else sorted(path.rglob("*.py")) if path.is_dir() else []
            for file in files:
                info = zipfile.ZipInfo(f"conformance/{file.relative_to(root).as_posix()}", (1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, file.read_bytes())
    return buffer.getvalue()


@dataclass(slots=True)
class ProbeClient:
    """Runs scenario batches on one host through its probe."""

    host: Host
    run_id: str
    timeout: float = 120.0
    _bundle: bytes = field(default=b"", repr=False)
    _python: str | None = field(default=None, repr=False)

    @property
    def bundle_path(self) -> str:
        """Where the probe zip lives on the host."""
        if not self._bundle:
            self._bundle = build_bundle()
        # The run id in the name: another run (or `conformance facts`) on the same host removes only its own.
        return f"/tmp/{PREFIX}{self.run_id}-probe-{hashlib.sha256(self._bundle).hexdigest()[:12]}.pyz"

    def _sh(self, script: str, *args: str, timeout: float = _SETUP_TIMEOUT) -> str:
        result = self.host.run(["sh", "-c", script, "sh", *args], timeout)
        if result.rc != 0:
            raise ProbeError(f"{self.host.name}: {result.describe()}")
        return result.stdout

    def _upload(self, data: bytes, path: str) -> None:
        """Write bytes to a file on the host in base64 chunks (testinfra has no file transfer)."""
        encoded = base64.b64encode(data).decode()
        partial = f"{path}.{secrets.token_hex(4)}.part"
        self._sh('umask 077; : > "$1"', partial)
        for start in range(0, len(encoded), _ARG_LIMIT):
            self._sh('printf %s "$2" | base64 -d >> "$1"', partial, encoded[start : start + _ARG_LIMIT])
        self._sh('mv -f "$1" "$2"', partial, path)

    def ensure(self) -> str:
        """Find the host's python3 and make sure the probe zip is there; returns the interpreter."""
        if self._python is None:
            out = self._sh(
                'command -v /usr/bin/python3 || command -v python3 || exit 3; test -f "$1" && echo present || true',
                self.bundle_path,
            )
            lines = out.split()
            if not lines:
                raise ProbeError(f"{self.host.name}: no python3 found on the host; install python3 (3.9 or later)")
            if "present" not in lines:
                self._upload(self._bundle, self.bundle_path)
            self._python = lines[0]
        return self._python

    def call(self, scenarios: Sequence[Scenario], implementation: str, fault: str | None = None,
             timeout: float | None = None) -> list[Observation]:
        """Run a batch in one probe process; one observation per scenario, in order."""
        python = self.ensure()
        request = {"run_id": self.run_id, "scenarios": [s.to_request(i, implementation, fault)
                                                         for i, s in enumerate(scenarios)]}
        encoded = base64.b64encode(json.dumps(request).encode()).decode()
        request_file = None
        if len(encoded) > _ARG_LIMIT:
            request_file = f"/tmp/{PREFIX}{self.run_id}-request-{secrets.token_hex(4)}.json"
            self._upload(json.dumps(request).encode(), request_file)
            argument = "@" + request_file
        else:
            argument = encoded
        limit = timeout or self.timeout
        try:
            result = self.host.run([python, self.bundle_path, argument], limit)
        finally:
            if request_file:
                self._sh('rm -f "$1"', request_file)
        if result.rc in (124, 137):
            how = ("it was stopped and cleaned up" if result.rc == 124 else
                   "it had to be killed: run `conformance clean` on the host")
            raise ProbeTimeout(f"{self.host.name}: probe for {', '.join(s.kind for s in scenarios)} "
                               f"took longer than {limit:g}s; {how}")
        if result.rc != 0:
            raise ProbeError(f"{self.host.name}: probe failed: {result.describe()}")
        try:
            answer = json.loads(result.stdout)
        except ValueError:
            raise ProbeError(f"{self.host.name}: probe answered with something that is not JSON: "
                             f"{result.stdout[:300]!r}; stderr: {result.stderr[-300:]!r}") from None
        observations = [Observation.from_json(raw) for raw in answer["observations"]]
        if len(observations) != len(scenarios):
            raise ProbeError(f"{self.host.name}: asked {len(scenarios)} scenarios, got {len(observations)} answers")
        return observations

    def sweep(self, run_id: str | None, dry_run: bool = False) -> Observation:
        """Remove (or list) prefixed leftovers of one run, or of every run when run_id is None.

        The probe's own zip is kept while the sweep runs; remove_bundle deletes it after.
        """
        keep = [self.bundle_path, self.unpacked_path]
        scenario = Scenario("clean.sweep", {"run_id": run_id, "dry_run": dry_run, "keep": keep})
        return self.call([scenario], "kernel")[0]

    @property
    def unpacked_path(self) -> str:
        """Where the probe unpacks its zip on the host (see _BOOT)."""
        return self.bundle_path.removesuffix(".pyz") + ".d"

    def remove_bundle(self) -> None:
        """Delete the probe zip, and the copy it unpacked, from the host at the end of a run."""
        self._sh('rm -rf "$1" "$2"', self.bundle_path, self.unpacked_path)

