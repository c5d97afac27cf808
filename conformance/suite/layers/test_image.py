"""OCI-*: image layouts, descriptors, manifests and the identifiers of layers."""

from __future__ import annotations

import hashlib

import pytest

from conformance.scenarios import layers
from conformance.scenarios.layers import directory, file, hardlink, opaque, symlink, whiteout
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


#: Three layers that use every kind of change: whiteouts of a file, a directory and a hardlink,
#: an opaque directory, a file replaced by a symlink, a directory's metadata changed. The hardlink's
#: header repeats its target's mode, as tar writers do: moby chmods the target to a link header's mode.
STACK = (
    [directory("etc"), file("etc/passwd", "root:x:0:0\n"), directory("bin"), file("bin/sh", "elf", mode=0o755),
     hardlink("bin/ash", "bin/sh", mode=0o755), directory("usr"), directory("usr/lib"), file("usr/lib/libc.so", "libc"),
     symlink("lib", "usr/lib"), directory("var"), directory("var/cache"), file("var/cache/a", "a"),
     file("var/cache/b", "b"), directory("tmp", mode=0o1777)],
    [file("etc/passwd", "root:x:0:0\nuser:x:1000:1000\n"), directory("var/cache"), opaque("var/cache"),
     file("var/cache/new", "new"), whiteout("tmp"), directory("home", mode=0o750, uid=1000, gid=1000)],
    [whiteout("bin/ash"), directory("etc", mode=0o700), symlink("usr/lib/libc.so", "libc.so.6"),
     file("usr/lib/libc.so.6", "libc 6")],
)
SAME = ("type", "content", "mode", "uid", "gid", "target", "rdev")


@pytest.mark.clause("OCI-MANIFEST-002")
def test_container_filesystem_is_the_layers_applied_in_order(target: Target) -> None:
    """A three-layer image with whiteouts, an opaque dir and replacements gives a container a tree.

    That tree MUST equal the implementation's own layers of the image applied in order by the reference.
    """
    seen = target.observe(layers.flatten(*STACK))
    target.expect("error", None, seen.get("error"))
    target.expect("layers kept for the image", len(STACK), seen["layers"])

    def shape(tree: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
        return {name: {key: entry.get(key) for key in SAME if key in entry} for name, entry in tree.items()}

    view, applied = shape(seen["view"]), shape(seen["applied"])
    target.expect("names only in the container", [], sorted(set(view) - set(applied)))
    target.expect("names missing from the container", [], sorted(set(applied) - set(view)))
    target.expect("entries that differ", {}, {name: {"container": view[name], "applied": applied[name]}
                                               for name in sorted(view) if view[name] != applied.get(name, view[name])})


def _contents(tree: dict[str, dict[str, object]]) -> dict[str, object]:
    return {name: entry.get("content", entry.get("type")) for name, entry in tree.items()}


TWO_LAYERS = ([directory("etc"), file("etc/os", "base" * 200), file("gone", "x")],
              [file("etc/os", "top" * 300), whiteout("gone")])


@pytest.mark.clause("OCI-MEDIA-001")
def test_tar_and_gzip_layers_are_applied_alike(target: Target) -> None:
    """The same two layers as tar and as tar+gzip MUST both apply, to the same tree."""
    plain, gzipped = (obs.data for obs in target.probe(layers.image(*TWO_LAYERS, compression="tar"),
                                                       layers.image(*TWO_LAYERS, compression="gzip")))
    for what, seen in (("tar", plain), ("tar+gzip", gzipped)):
        target.expect(f"{what} apply error", None, seen.get("error"))
        target.expect(f"{what} rootfs", {"etc": "dir", "etc/os": "top" * 300}, _contents(seen["tree"]))


@pytest.mark.clause("OCI-MEDIA-002")
def test_zstd_layers_are_applied(target: Target) -> None:
    """The same two layers as tar+zstd SHOULD apply to the same tree."""
    seen = target.observe(layers.image(*TWO_LAYERS, compression="zstd"))
    target.expect("tar+zstd apply error", None, seen.get("error"))
    target.expect("tar+zstd rootfs", {"etc": "dir", "etc/os": "top" * 300}, _contents(seen["tree"]))


@pytest.mark.clause("OCI-LAYOUT-002")
def test_image_that_cannot_be_read_whole_is_refused(target: Target) -> None:
    """The image as written MUST be read; with its manifest or config not JSON, or its layer blob gone, refused."""
    kinds = ("none", "manifest-not-json", "config-not-json", "missing-layer")
    seen = dict(zip(kinds, (obs.data for obs in target.probe(*(layers.broken(kind) for kind in kinds))), strict=True))
    target.expect("read (control: the image as written)", True, seen["none"]["read"],
                  hint=seen["none"].get("error", ""))
    for kind in kinds[1:]:
        target.expect(f"read with {kind}", False, seen[kind]["read"])
