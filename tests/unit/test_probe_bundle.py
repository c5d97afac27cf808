"""The probe zip is deterministic, self-contained and runs on a bare python3 (standard library only)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

from conformance.transport import build_bundle


def test_bundle_is_deterministic() -> None:
    assert build_bundle() == build_bundle()


def test_bundle_holds_only_host_side_code() -> None:
    names = zipfile.ZipFile(BytesIO(build_bundle())).namelist()
    assert "__main__.py" in names and "conformance/probe/__main__.py" in names
    assert not [n for n in names if n.startswith(("conformance/report", "conformance/plugin", "conformance/drivers"))]


def test_bundle_runs_isolated_from_site_packages(tmp_path: Path) -> None:
    """-I -S: no site-packages, so the probe can't lean on pytest, yaml or jinja2."""
    bundle = tmp_path / "conformance-probe.pyz"
    bundle.write_bytes(build_bundle())
    python = shutil.which("python3", path="/usr/bin") or sys.executable
    request = base64.b64encode(json.dumps({"run_id": "unit", "scenarios": [
        {"id": "0", "kind": "host.filesystems", "params": {}, "implementation": "kernel", "fault": None},
        {"id": "1", "kind": "no.such.kind", "params": {}, "implementation": "kernel", "fault": None},
    ]}).encode()).decode()
    done = subprocess.run([python, "-I", "-S", str(bundle), request], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    first, second = answer["observations"]
    assert first["ok"] and "proc" in first["data"]["types"]
    assert not second["ok"] and "unknown scenario kind" in second["error"]["error"]


def test_unreadable_request_is_a_clear_error(tmp_path: Path) -> None:
    bundle = tmp_path / "conformance-probe.pyz"
    bundle.write_bytes(build_bundle())
    done = subprocess.run([sys.executable, str(bundle), "not-base64-json!"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and "unreadable request" in done.stderr
