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


def test_build_then_rebuild_from_the_cache_then_inspect(scratch: Path) -> None:
    """`ref build` says what each step made; the second build takes every step from the cache."""
    context = scratch / "ctx"
    (context / "app").mkdir(parents=True)
    (context / "app" / "hello").write_text("hi\n")
    (context / "Containerfile").write_text('FROM scratch\nCOPY app/ /app/\nENV A=1\nCMD ["/app/hello"]\n')
    args = ("build", str(context), "-t", f"{scratch / 'out'}:demo", "--cache", str(scratch / "cache"))
    first, second = _cli(*args), _cli(*args)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "built   line 2" in first.stdout and "no layer (config only)" in first.stdout
    assert [line.split()[0] for line in second.stdout.splitlines()[:3]] == ["cached"] * 3
    assert first.stdout.splitlines()[-1] == second.stdout.splitlines()[-1]  # the same manifest digest
    shown = _cli("inspect", f"{scratch / 'out'}:demo")
    assert "COPY app/ /app/" in shown.stdout, shown.stderr


def test_build_refuses_run_with_the_line(scratch: Path) -> None:
    (scratch / "Containerfile").write_text("FROM scratch\nRUN make\n")
    done = _cli("build", str(scratch), "-t", f"{scratch / 'out'}:x", "--no-cache")
    assert done.returncode == 2 and "line 2" in done.stderr and "RUN" in done.stderr, done.stderr
