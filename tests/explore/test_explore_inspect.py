"""`conformance ref inspect` and `ref layer show` as data and as text: ids, history, counts, whiteouts."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conformance.explore import inspect, show
from conformance.explore.entries import LayerEntry
from conformance.ref.layout import Layout
from tests.explore.demo import LAYERS
from tests.ref.trees import make_tar


def _chain(diff_ids: list[str]) -> list[str]:
    """ChainIDs written out from config.md, not taken from conformance.ref.digest."""
    chains = [diff_ids[0]]
    for diff_id in diff_ids[1:]:
        chains.append("sha256:" + hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest())
    return chains


def test_layers_have_diff_ids_and_chain_ids(demo: Layout) -> None:
    """Each layer's DiffID is the sha256 of its uncompressed tar; ChainIDs chain them with a space."""
    info = inspect.inspect_image(demo.path, "demo")
    diff_ids = ["sha256:" + hashlib.sha256(make_tar(*entries)).hexdigest() for entries in LAYERS]
    assert [layer.diff_id for layer in info.layers] == diff_ids
    assert [layer.chain_id for layer in info.layers] == _chain(diff_ids)
    assert all(layer.diff_id_matches for layer in info.layers)
    assert info.layers[0].compressed_size < info.layers[0].size  # the base is gzipped
    assert info.layers[1].compressed_size == info.layers[1].size


def test_history_is_matched_to_layers_skipping_empty_steps(demo: Layout) -> None:
    """Non-empty history entries belong to the layers in order; ENV, WORKDIR, USER, CMD make none."""
    info = inspect.inspect_image(demo.path, "demo")
    assert [layer.created_by for layer in info.layers] == [
        "ADD rootfs.tar /", "RUN apt-get install -y curl && rm -rf /var/cache/apt/* && rm /etc/motd",
        "COPY app/ /app/", "RUN adduser -D app && rm /usr/share/doc/README"]
    assert [step.layer for step in info.history] == [0, 1, None, None, 2, 3, None, None]


def test_counts_files_and_whiteouts(demo: Layout) -> None:
    info = inspect.inspect_image(demo.path, "demo")
    assert [(layer.content.files, layer.content.whiteouts) for layer in info.layers] == [(12, 0), (4, 2), (3, 0),
                                                                                         (3, 1)]
    assert info.config["WorkingDir"] == "/app" and info.config["User"] == "app"


def test_text_output_is_an_aligned_table(demo: Layout) -> None:
    info = inspect.inspect_image(demo.path, "demo")
    text = inspect.render_text(info)
    lines = text.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("#  DIFF ID"))
    rows = lines[lines.index(header) + 1:lines.index(header) + 5]
    column = header.index("CREATED BY")
    assert [row[column:column + 3] for row in rows] == ["ADD", "RUN", "COPY"[:3], "RUN"]
    assert inspect.short(info.layers[2].chain_id) in rows[2]
    assert "WorkingDir  /app" in text and "User        app" in text
    assert max(len(line) for line in lines) <= 120


def test_json_output_is_stable_and_complete(demo: Layout) -> None:
    first = inspect.render_json(inspect.inspect_image(demo.path, "demo"))
    assert first == inspect.render_json(inspect.inspect_image(demo.path, "demo"))
    doc = json.loads(first)
    assert list(doc) == sorted(doc)
    assert [layer["whiteouts"] for layer in doc["layers"]] == [0, 2, 0, 1]
    assert doc["layers"][3]["chain_id"].startswith("sha256:") and doc["graph_driver"] is None
    assert doc["config"]["Cmd"] == ["python3", "server.py"]


def test_image_spec_takes_a_tag_after_the_last_colon(tmp_path: Path) -> None:
    assert inspect.parse_image("/x/layout:v1") == (Path("/x/layout"), "v1")
    assert inspect.parse_image("/x/layout") == (Path("/x/layout"), None)
    odd = tmp_path / "a:b"
    odd.mkdir()
    assert inspect.parse_image(str(odd)) == (odd, None)


def test_layer_show_marks_whiteouts_and_opaque_directories(demo: Layout) -> None:
    """`.wh.motd` reads as a whiteout of etc/motd, `.wh..wh..opq` as hiding var/cache/apt's lower children."""
    layer = show.load_layer(f"{demo.path}:demo#1")
    text = show.render_text(layer)
    assert "etc/.wh.motd   <- whiteout of etc/motd" in text
    assert "var/cache/apt/.wh..wh..opq   <- opaque: hides lower children of var/cache/apt/" in text
    doc = json.loads(show.render_json(layer))
    marked = {e["path"]: e["hides"] for e in doc["entries"] if e["type"] in ("whiteout", "opaque")}
    assert marked == {"etc/.wh.motd": "etc/motd", "var/cache/apt/.wh..wh..opq": "var/cache/apt"}
    assert doc["diff_id"] == doc["config_diff_id"]


def test_layer_show_by_digest_and_by_blob_file(demo: Layout) -> None:
    """The gzipped base named by digest and as a file gives the same entries, links spelled out."""
    base = demo.manifest(demo.resolve("demo")).layers[0]
    by_digest = show.load_layer(f"{demo.path}@{base.digest}")
    by_file = show.load_layer(str(demo.blob_path(base.digest)))
    assert by_digest.content.entries == by_file.content.entries
    text = show.render_text(by_file)
    assert "bin/sh -> busybox" in text and "bin/ls => bin/busybox (hardlink)" in text
    assert "drwxrwxrwt" in text  # tmp/ with its sticky bit


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd(1) is not installed")
def test_layer_show_reads_a_zstd_blob(scratch: Path) -> None:
    tar = scratch / "layer.tar"
    tar.write_bytes(make_tar(*LAYERS[3]))
    subprocess.run(["zstd", "-q", str(tar), "-o", str(scratch / "layer.tar.zst")], check=True)
    layer = show.load_layer(str(scratch / "layer.tar.zst"))
    assert layer.media_type.endswith("+zstd")
    assert "whiteout of usr/share/doc/README" in show.render_text(layer)


def test_unknown_layer_spec_says_what_it_accepts(scratch: Path) -> None:
    with pytest.raises(LookupError, match="LAYOUT@sha256"):
        show.load_layer(str(scratch / "nothing"))


def test_upper_changes_are_marked_copied_up_or_new(demo: Layout, scratch: Path) -> None:
    """An upper file that exists in the image was copied up; a 0/0 device there is a whiteout."""
    upper = scratch / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "hostname").write_text("web\n")
    (upper / "new.txt").write_text("n\n")
    info = inspect.with_upper(inspect.inspect_image(demo.path, "demo"), upper)
    marks = {e["path"]: e["marks"] for e in json.loads(inspect.render_json(info))["upper"]}
    assert "copied-up" in marks["etc/hostname"] and "new" in marks["new.txt"]
    assert "copied up from the image" in inspect.render_text(info)


def test_entry_meaning_in_words() -> None:
    assert LayerEntry("a/.wh.b", "whiteout", hides="a/b").meaning() == "whiteout of a/b"
    assert LayerEntry(".wh..wh..opq", "opaque", hides="").meaning() == "opaque: hides lower children of /"
