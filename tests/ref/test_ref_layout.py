"""OCI image layouts: write, read back, apply; and every malformed or tampered layout is refused before
anything is written (image-layout.md, manifest.md, config.md, descriptor.md; OCI-DESC-*, OCI-LAYOUT-*)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jail import Jail
from trees import directory, file, make_tar, symlink, whiteout

from conformance.ref.digest import chain_id, digest_bytes, new_hash, parse_digest
from conformance.ref.errors import LayoutError
from conformance.ref.image import apply_image
from conformance.ref.layout import Layout, host_architecture, write_layout
from conformance.ref.oci import (
    INDEX,
    MANIFEST,
    REF_NAME,
    Descriptor,
    History,
    Manifest,
    dumps_canonical,
    loads_strict,
)

BASE = make_tar(directory("etc"), file("etc/hosts", b"127.0.0.1 localhost\n"), file("etc/motd", b"hi\n"),
                directory("bin"), file("bin/sh", b"#!", mode=0o755), symlink("bin/ash", "sh"))
TOP = make_tar(whiteout("etc/.wh.motd"), file("etc/new", b"new\n"))


def write_image(root: Path, ref: str = "t") -> Descriptor:
    layout = Layout.create(root)
    layers = [layout.add_layer(BASE, compress=True), layout.add_layer(TOP)]
    history = [History(created_by="base"), History(created_by="ENV x=1", empty_layer=True), History(created_by="top")]
    return layout.add_image(ref, layers, history=history, config={"Env": ["x=1"]})


def tree(root: Path) -> dict[str, bytes | str | None]:
    found: dict[str, bytes | str | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = str(full.relative_to(root))
            found[rel] = os.readlink(full) if full.is_symlink() else full.read_bytes() if full.is_file() else None
    return found


EXPECTED = {"etc": None, "etc/hosts": b"127.0.0.1 localhost\n", "etc/new": b"new\n", "bin": None, "bin/sh": b"#!",
            "bin/ash": "sh"}


def test_written_layout_reads_back_and_applies(scratch: Path) -> None:
    descriptor = write_image(scratch / "layout")
    layout = Layout(scratch / "layout")
    assert layout.resolve("t") == descriptor and layout.resolve(None) == descriptor
    manifest = layout.manifest(descriptor)
    config = layout.config(manifest)
    assert [layer.media_type for layer in manifest.layers] == [
        "application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar"]
    assert config.diff_ids == (digest_bytes(BASE), digest_bytes(TOP))
    assert [step.empty_layer for step in config.history] == [False, True, False]
    assert config.document["architecture"] == host_architecture() and config.document["config"] == {"Env": ["x=1"]}
    assert json.loads((scratch / "layout" / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    (scratch / "rootfs").mkdir()
    stats = apply_image(layout, "t", scratch / "rootfs")
    assert tree(scratch / "rootfs") == EXPECTED
    assert [s.diff_id for s in stats.layers] == list(config.diff_ids)
    assert stats.layers[0].digest == manifest.layers[0].digest


def test_writing_is_deterministic(scratch: Path) -> None:
    """OCI-CFG-004: no timestamps in gzip headers or configs, canonical JSON: same image, same digests."""
    assert write_image(scratch / "one") == write_image(scratch / "two")


def test_same_ref_is_replaced_and_other_refs_are_kept(scratch: Path) -> None:
    layout = Layout.create(scratch / "layout")
    first = layout.add_image("a", [layout.add_layer(BASE)])
    layout.add_image("b", [layout.add_layer(TOP)])
    again = layout.add_image("a", [layout.add_layer(TOP)])
    names = [(m.ref_name, m.digest) for m in layout.index().manifests]
    assert ("a", again.digest) in names and ("a", first.digest) not in names and len(names) == 2
    with pytest.raises(LayoutError, match=re.escape("2 manifests in index.json; name one of ['a', 'b']")):
        layout.resolve(None)


def test_unknown_index_entries_and_files_are_ignored(scratch: Path) -> None:
    """OCI-LAYOUT-003/004: unknown mediaTypes in index.json, unknown files and extra blobs are fine."""
    write_image(scratch / "layout")
    layout = Layout(scratch / "layout")
    extra = layout.add_blob(b"not an image", "application/x-conformance-test", {REF_NAME: "other"})
    write_layout(layout.path, [*layout.index().manifests, extra])
    (layout.path / "manifest.json").write_text("[]")
    (layout.path / "rootfs").mkdir()
    apply_image(layout, "t", layout.path / "rootfs")
    assert tree(layout.path / "rootfs") == EXPECTED
    with pytest.raises(LayoutError, match="is not an image"):
        layout.resolve("other")


def test_multi_platform_index_is_followed_to_this_host(scratch: Path) -> None:
    descriptor = write_image(scratch / "layout")
    layout = Layout(scratch / "layout")
    linux = Descriptor(MANIFEST, descriptor.digest, descriptor.size,
                       platform={"os": "linux", "architecture": host_architecture()})
    other = Descriptor(MANIFEST, descriptor.digest, descriptor.size, platform={"os": "linux", "architecture": "mips"})
    nested = layout.add_json({"schemaVersion": 2, "mediaType": INDEX, "manifests": [other.to_json(), linux.to_json()]},
                             INDEX)
    write_layout(layout.path, [Descriptor(INDEX, nested.digest, nested.size, {REF_NAME: "multi"})])
    assert layout.resolve("multi").digest == descriptor.digest


def test_documents_round_trip() -> None:
    manifest = Manifest(Descriptor("application/vnd.oci.image.config.v1+json", "sha256:" + "a" * 64, 2),
                        (Descriptor("application/vnd.oci.image.layer.v1.tar", "sha256:" + "b" * 64, 3,
                                    {"k": "v"}),), annotations={"x": "y"})
    data = dumps_canonical(manifest.to_json())
    assert Manifest.from_json(loads_strict(data, "m"), "m") == manifest
    assert data == dumps_canonical(json.loads(data)), "canonical JSON is stable"


# Refused layouts ------------------------------------------------------------------------------------------


def _rewrite(root: Path, *, manifest: Callable[[dict[str, Any]], Any] | None = None,
             config: Callable[[dict[str, Any]], Any] | None = None, raw_manifest: bytes | None = None) -> None:
    """Edit the image's config and/or manifest, store them as new blobs and point index.json at them."""
    layout = Layout(root)
    (descriptor,) = layout.index().manifests
    manifest_doc = json.loads(layout.read_blob(descriptor))
    if config is not None:
        config_doc = json.loads(layout.read_blob(Descriptor.from_json(manifest_doc["config"], "config")))
        config(config_doc)
        manifest_doc["config"] = layout.add_json(config_doc, manifest_doc["config"]["mediaType"]).to_json()
    if manifest is not None:
        manifest(manifest_doc)
    data = raw_manifest if raw_manifest is not None else dumps_canonical(manifest_doc)
    new = layout.add_blob(data, descriptor.media_type, descriptor.annotations)
    write_layout(root, [new])


def _layer_path(root: Path, n: int) -> Path:
    layout = Layout(root)
    manifest = layout.manifest(layout.resolve("t"))
    return layout.blob_path(manifest.layers[n].digest)


def _replace(path: Path, data: bytes) -> None:
    path.chmod(0o644)
    path.write_bytes(data)


def _set_index(root: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    doc = json.loads((root / "index.json").read_bytes())
    edit(doc)
    (root / "index.json").write_bytes(json.dumps(doc).encode())


def _blob_as_symlink(root: Path) -> None:
    path = _layer_path(root, 1)
    data = path.read_bytes()
    path.unlink()
    (root / "elsewhere").write_bytes(data)
    path.symlink_to(root / "elsewhere")


def _recompressed(root: Path) -> None:
    path = _layer_path(root, 0)
    _replace(path, gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=0)[:path.stat().st_size]
             .ljust(path.stat().st_size, b"\0"))


REFUSED: dict[str, tuple[Callable[[Path], Any], str]] = {
    "blob-wrong-digest": (lambda r: _replace(_layer_path(r, 1), bytes(len(TOP))), "content digest is sha256:"),
    "blob-recompressed": (_recompressed, "content digest is sha256:"),
    "blob-short": (lambda r: _replace(_layer_path(r, 1), TOP[:-1]), "shorter than the descriptor's size"),
    "blob-long": (lambda r: _replace(_layer_path(r, 1), TOP + b"\0"), "longer than the descriptor's size"),
    "blob-missing": (lambda r: _layer_path(r, 1).unlink(), "missing from the layout"),
    "blob-symlink": (_blob_as_symlink, "(a symlink)"),
    "manifest-missing": (lambda r: Layout(r).blob_path(Layout(r).resolve("t").digest).unlink(),
                         "missing from the layout"),
    "index-malformed": (lambda r: (r / "index.json").write_bytes(b"{not json"), "malformed JSON"),
    "index-manifests-null": (lambda r: _set_index(r, lambda d: d.update(manifests=None)), "'manifests' must be a list"),
    "index-with-layers": (lambda r: _set_index(r, lambda d: d.update(layers=[])), "ambiguous (CVE-2021-41190)"),
    "index-digest-uppercase": (lambda r: _set_index(r, lambda d: d["manifests"][0].update(
        digest=d["manifests"][0]["digest"].upper().replace("SHA256", "sha256"))), "lowercase hex"),
    "index-digest-traversal": (lambda r: _set_index(r, lambda d: d["manifests"][0].update(
        digest="sha256:../../../etc/passwd")), "does not match the digest grammar"),
    "index-size-negative": (lambda r: _set_index(r, lambda d: d["manifests"][0].update(size=-1)),
                            "size must be a non-negative integer"),
    "index-size-wrong": (lambda r: _set_index(r, lambda d: d["manifests"][0].update(
        size=d["manifests"][0]["size"] + 1)), "shorter than the descriptor's size"),
    "manifest-malformed": (lambda r: _rewrite(r, raw_manifest=b'{"schemaVersion": 2,'), "malformed JSON"),
    "manifest-not-utf8": (lambda r: _rewrite(r, raw_manifest=b'{"schemaVersion": 2, "x": "\xff"}'), "not UTF-8"),
    "manifest-duplicate-keys": (lambda r: _rewrite(r, raw_manifest=b'{"schemaVersion": 2, "layers": [], "layers": []}'),
                                "duplicate name 'layers'"),
    "manifest-with-manifests": (lambda r: _rewrite(r, manifest=lambda m: m.update(manifests=[])),
                                "ambiguous (CVE-2021-41190)"),
    "manifest-says-index": (lambda r: _rewrite(r, manifest=lambda m: m.update(mediaType=INDEX)),
                            "is not an image manifest"),
    "manifest-schema-1": (lambda r: _rewrite(r, manifest=lambda m: m.update(schemaVersion=1)),
                          "schemaVersion must be 2"),
    "manifest-layer-lz4": (lambda r: _rewrite(r, manifest=lambda m: m["layers"][1].update(
        mediaType="application/vnd.oci.image.layer.v1.tar+lz4")), "is not supported"),
    "manifest-layer-unknown": (lambda r: _rewrite(r, manifest=lambda m: m["layers"][1].update(
        mediaType="application/x-conformance-test")), "'application/x-conformance-test' is not supported"),
    "config-unknown-type": (lambda r: _rewrite(r, manifest=lambda m: m["config"].update(
        mediaType="application/x-conformance-test")), "is not an image config"),
    "config-rootfs-type": (lambda r: _rewrite(r, config=lambda c: c["rootfs"].update(type="zfs")),
                           "rootfs.type must be 'layers'"),
    "config-diff-id-wrong": (lambda r: _rewrite(r, config=lambda c: c["rootfs"]["diff_ids"].__setitem__(
        1, "sha256:" + hashlib.sha256(b"other").hexdigest())), "is not rootfs.diff_ids[1]"),
    "config-diff-ids-short": (lambda r: _rewrite(r, config=lambda c: c["rootfs"]["diff_ids"].pop()),
                              "2 layers but the config has 1 diff_ids"),
    "layout-version": (lambda r: (r / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}'),
                       "imageLayoutVersion '2.0.0' is not supported"),
    "layout-marker-missing": (lambda r: (r / "oci-layout").unlink(), "not an OCI image layout"),
    "layout-no-blobs": (lambda r: (r / "blobs").rename(r / "old-blobs"), "no blobs/ directory"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_bad_layout_is_refused_before_anything_is_written(name: str, jail: Jail) -> None:
    """OCI-DESC-003/004/005, OCI-DESC-008, OCI-MAN-*, OCI-CFG-001/002, OCI-LAYOUT-*: a LayoutError that says
    what is wrong, an untouched (empty) rootfs, and nothing changed beside it."""
    root = jail.sentinel.parent / "layout"
    write_image(root)
    break_it, expect = REFUSED[name]
    break_it(root)
    jail.remember()
    with pytest.raises(LayoutError) as caught:
        apply_image(root, "t", jail.rootfs)
    assert expect in str(caught.value), str(caught.value)
    assert os.listdir(jail.rootfs) == [], "nothing is applied before every layer verifies"
    jail.check()


def test_unknown_ref_is_refused(scratch: Path) -> None:
    write_image(scratch)
    with pytest.raises(LayoutError, match="no manifest named 'nope'"):
        Layout(scratch).resolve("nope")


def test_document_size_is_checked_before_reading(scratch: Path) -> None:
    write_image(scratch)
    layout = Layout(scratch)
    huge = Descriptor(MANIFEST, layout.resolve("t").digest, 1 << 40)
    with pytest.raises(LayoutError, match=r"over the \d+-byte limit"):
        layout.manifest(huge)


# Digests --------------------------------------------------------------------------------------------------


@given(st.binary(max_size=64))
def test_sha256_digests_parse_and_verify(data: bytes) -> None:
    digest = digest_bytes(data)
    assert parse_digest(digest) == ("sha256", digest[7:])
    hasher = new_hash(digest)
    hasher.update(data)
    assert hasher.hexdigest() == digest[7:]


@given(st.from_regex(r"\A[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+\Z"))
def test_grammatical_digests_parse(digest: str) -> None:
    """OCI-DESC-001: anything on the grammar parses, unless it claims a registered algorithm wrongly."""
    algorithm = digest.split(":", maxsplit=1)[0]
    if algorithm in ("sha256", "sha512"):
        return
    assert parse_digest(digest)[0] == algorithm
    with pytest.raises(LayoutError, match="not supported for verification"):
        new_hash(digest)


@pytest.mark.parametrize("digest", ["sha256:" + "A" * 64, "sha256:abc", "SHA256:" + "a" * 64, "sha256:../../x",
                                    "sha256", ":abc", "sha256:" + "a" * 63 + "/", 42])
def test_bad_digests_are_refused(digest: object) -> None:
    """OCI-DESC-002, H-23."""
    with pytest.raises(LayoutError):
        parse_digest(digest)


def test_chain_id() -> None:
    """OCI-CFG-005: ChainID(L0) = DiffID(L0); ChainID(L0|L1) = Digest(ChainID(L0) + " " + DiffID(L1))."""
    one, two = digest_bytes(b"1"), digest_bytes(b"2")
    assert chain_id([one]) == one
    assert chain_id([one, two]) == "sha256:" + hashlib.sha256(f"{one} {two}".encode()).hexdigest()


def test_json_constants_are_refused() -> None:
    with pytest.raises(LayoutError, match="NaN is not JSON"):
        loads_strict(b'{"x": NaN}', "doc")
