"""`python -m conformance ref ...` end to end, as a person types it."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from conformance.ref.layout import Layout
from tests.conftest import ROOT
from tests.explore.conftest import needs_overlay


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conformance", "ref", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, check=False)


def test_inspect_prints_layers_and_writes_the_picture(demo: Layout, scratch: Path) -> None:
    picture = scratch / "stack.svg"
    done = _cli("inspect", f"{demo.path}:demo", "--svg", str(picture))
    assert done.returncode == 0, done.stderr
    assert "Layers, base first: 4" in done.stdout and "COPY app/ /app/" in done.stdout
    assert ET.parse(picture).getroot().tag.endswith("svg")


def test_inspect_json_and_layer_show(demo: Layout) -> None:
    done = _cli("inspect", f"{demo.path}:demo", "--json")
    assert done.returncode == 0, done.stderr
    layers = json.loads(done.stdout)["layers"]
    shown = _cli("layer", "show", f"{demo.path}@{layers[3]['digest']}")
    assert shown.returncode == 0, shown.stderr
    assert "whiteout of usr/share/doc/README" in shown.stdout


@needs_overlay()
def test_inspect_with_a_container_shows_graph_driver_data(demo: Layout, scratch: Path) -> None:
    store = scratch / "conformance-store"
    done = _cli("inspect", f"{demo.path}:demo", "--container", "web", "--store", str(store), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)["graph_driver"]["Data"]
    assert len(data["LowerDir"].split(":")) == 4 and data["UpperDir"].endswith("containers/web/upper")


def test_a_missing_image_is_a_usage_error_with_a_reason(scratch: Path) -> None:
    done = _cli("inspect", str(scratch / "nothing"))
    assert done.returncode == 2
    assert "not an OCI image layout" in done.stderr and "Traceback" not in done.stderr
