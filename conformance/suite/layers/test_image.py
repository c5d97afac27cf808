"""OCI-*: image layouts, descriptors, manifests and the identifiers of layers."""

from __future__ import annotations

import hashlib

import pytest

from conformance.scenarios import layers
from conformance.scenarios.layers import file
from conformance.target import Target

DIFF_IDS = [f"sha256:{hashlib.sha256(text.encode()).hexdigest()}" for text in ("base", "middle", "top")]


@pytest.mark.clause("OCI-MANIFEST-001")
def test_layers_are_applied_in_manifest_order(target: Target) -> None:
    """layers[0] writes f=base and b, layers[1] f=top: the rootfs MUST hold f=top and b."""
    seen = target.observe(layers.image([file("f", "base"), file("b", "base only")], [file("f", "top")]))
    target.expect("apply error", None, seen.get("error"))
    contents = {name: entry.get("content") for name, entry in seen["tree"].items()}
    target.expect("rootfs (name: content)", {"b": "base only", "f": "top"}, contents)


@pytest.mark.clause("OCI-DESC-001")
def test_blob_with_wrong_digest_is_refused(target: Target) -> None:
    """A blob rewritten with other bytes of the same length MUST fail to read through its descriptor."""
    control, seen = (obs.data for obs in target.probe(layers.blob("none"), layers.blob("digest")))
    target.expect("verified (control: the blob as written)", True, control["verified"], hint=control.get("error", ""))
    target.expect("verified", False, seen["verified"])


@pytest.mark.clause("OCI-DESC-002")
def test_blob_with_wrong_size_is_refused(target: Target) -> None:
    """A descriptor claiming one byte more, or one less, than the blob SHOULD make the read fail."""
    control = target.observe(layers.blob("none"))
    target.expect("verified (control: the right size)", True, control["verified"], hint=control.get("error", ""))
    for delta in (1, -1):
        seen = target.observe(layers.blob("size", delta=delta))
        target.expect(f"verified with size {delta:+d}", False, seen["verified"])


@pytest.mark.clause("OCI-CONFIG-001")
def test_diff_id_is_the_digest_of_the_uncompressed_tar(target: Target) -> None:
    """Apply a gzip layer: its DiffID MUST be sha256 of the tar, not of the gzip blob."""
    seen = target.observe(layers.ids([file("a", "a" * 1000), file("b", "b")]))
    target.expect("DiffID", seen["sha256_tar"], seen["diff_id"])
    target.expect("blob digest", seen["sha256_blob"], seen["digest"])


@pytest.mark.clause("OCI-CONFIG-002")
def test_layer_not_matching_diff_ids_is_refused_before_applying(target: Target) -> None:
    """An image whose config has another tar's DiffID for its layer SHOULD be refused with nothing written."""
    seen = target.observe(layers.image([file("a", "a")], wrong_diff_id=0, gzip=True))
    target.expect_that("apply_image", "error" in seen, "an error naming the DiffID mismatch", "no error")
    target.expect("rootfs names", [], sorted(seen["tree"]))


@pytest.mark.clause("OCI-CONFIG-003")
def test_chain_id_follows_the_spec(target: Target) -> None:
    """ChainID of one layer MUST be its DiffID; of three, sha256 of "ChainID(L0..1) DiffID(L2)", recursively."""
    expected = DIFF_IDS[0]
    for diff_id in DIFF_IDS[1:]:
        expected = f"sha256:{hashlib.sha256(f'{expected} {diff_id}'.encode()).hexdigest()}"
    one, three = target.probe(layers.chain_id(DIFF_IDS[:1]), layers.chain_id(DIFF_IDS))
    target.expect("ChainID of one layer", DIFF_IDS[0], one.data["chain_id"])
    target.expect("ChainID of three layers", expected, three.data["chain_id"])


@pytest.mark.clause("OCI-LAYOUT-001")
def test_directory_without_oci_layout_is_refused(target: Target) -> None:
    """blobs/ and index.json but no oci-layout, or one without imageLayoutVersion: opening MUST fail."""
    control = target.observe(layers.layout({"imageLayoutVersion": "1.0.0"}))
    target.expect("opened (control: a valid oci-layout)", True, control["opened"], hint=control.get("error", ""))
    for what, document in (("missing oci-layout", None), ("oci-layout without imageLayoutVersion", {})):
        seen = target.observe(layers.layout(document))
        target.expect(f"opened ({what})", False, seen["opened"])


@pytest.mark.clause("OCI-CONFIG-004")
def test_image_with_unknown_rootfs_type_is_refused(target: Target) -> None:
    """The same one-layer image unpacks with rootfs.type "layers" and MUST be refused with "zfs"."""
    good, bad = (obs.data for obs in target.probe(layers.image([file("a", "a")]),
                                                  layers.image([file("a", "a")], rootfs_type="zfs")))
    target.expect("unpack error (control: rootfs.type layers)", None, good.get("error"))
    target.expect_that("unpack with rootfs.type zfs", "error" in bad, "an error naming rootfs.type",
                       f"no error; rootfs {sorted(bad['tree'])}")


@pytest.mark.clause("OCI-COPY-001")
def test_copying_an_image_keeps_its_layers(target: Target) -> None:
    """Copy a two-layer image (tar, then gzip): the copy MUST list the same DiffIDs and hold the same tars."""
    seen = target.observe(layers.copy([file("a", "a" * 3000), file("b", "b")], [file("c", "c" * 5000)]))
    target.expect("copy error", None, seen.get("error"))
    target.expect("the copy's rootfs.diff_ids", seen["original"]["diff_ids"], seen["diff_ids"])
    target.expect("sha256 of each copied layer, uncompressed", seen["original"]["diff_ids"], seen["layers"],
                  hint=f"copied media types: {seen.get('media_types')}")
