"""The hostile corpus is well-formed data, and each byte recipe builds the broken bytes it is named for."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zlib
from pathlib import Path

import pytest

from conformance.clauses import load_catalogue
from conformance.probe.hostile_checks import RECIPES, build_layers, changes, snapshot
from conformance.ref.oci import LAYER_GZIP, LAYER_TAR
from conformance.scenarios import hostile
from conformance.scenarios.hostile import CASES, HostileCase

SENTINEL = "/dev/shm/conformance-x/hostile/sentinel"


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return list(tar)


@pytest.mark.parametrize("case", CASES.values(), ids=lambda case: case.id)
def test_every_case_builds_and_is_plain_data(case: HostileCase) -> None:
    params = case.scenario().params
    assert json.loads(json.dumps(params)) == params
    blobs = build_layers(dict(params), SENTINEL)
    assert len(blobs) == len(case.layers) >= 1
    assert [b.media_type for b in blobs[:-1]] == [LAYER_TAR] * (len(blobs) - 1)
    assert blobs[-1].media_type == case.media_type
    assert "{sentinel}" not in repr([b.data for b in blobs])


def test_ids_are_unique_and_every_case_says_what_the_reference_does() -> None:
    ids = [case.id for case in (*hostile.REFUSED, *hostile.CONTAINED)]
    assert len(ids) == len(set(ids)) == len(CASES)
    for case in CASES.values():
        assert case.hazard.startswith("H-")
        if case.expect == "refused":
            assert case.words and case.path is None, case.id
        else:
            assert case.path and case.words is None and case.entry is None and not case.must_refuse, case.id
        assert case.ref_only == bool(case.options)


def test_clauses_exist_and_each_has_cases() -> None:
    catalogue = load_catalogue()
    for clause in (hostile.SAFE, hostile.WHOLE):
        assert catalogue.get(clause).area == "layers"
        assert hostile.cases(clause)
    assert len(hostile.cases(hostile.SAFE)) == len(CASES)
    assert all(case.expect == "refused" for case in hostile.cases(hostile.WHOLE))
    assert any(not case.ref_only for case in hostile.cases(hostile.WHOLE))  # tools get some too


def test_every_recipe_is_used_and_every_used_recipe_exists() -> None:
    used = {layer["recipe"] for case in CASES.values() for layer in case.layers if isinstance(layer, dict)}
    assert used == set(RECIPES)


def test_sentinel_placeholder_lands_on_the_sentinel() -> None:
    [blob] = build_layers(CASES["symlink-to-root-then-write"].scenario().params, SENTINEL)
    names = [m.name for m in _members(blob.data)]
    assert names == ["a", f"a{SENTINEL}/victim"]
    [blob] = build_layers(CASES["symlink-absolute-then-write"].scenario().params, SENTINEL)
    assert _members(blob.data)[0].linkname == SENTINEL


def test_chardev_entries_are_devices() -> None:
    [blob] = build_layers(CASES["device-refused"].scenario().params, SENTINEL)
    [member] = _members(blob.data)
    assert member.ischr() and (member.devmajor, member.devminor) == (1, 1)


def test_truncated_gzip_does_not_decompress() -> None:
    with pytest.raises(EOFError):
        gzip.decompress(RECIPES["truncated-gzip"]())


def test_not_gzip_is_not_gzip() -> None:
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(RECIPES["not-gzip"]())


def test_gzip_bomb_is_small_and_expands_past_the_limit() -> None:
    data = RECIPES["gzip-bomb"]()
    assert len(data) < 1 << 20
    assert len(zlib.decompress(data, wbits=31)) > CASES["gzip-bomb"].options["max_bytes"]


def test_truncated_tar_data_cannot_be_read_to_its_end() -> None:
    with pytest.raises(tarfile.ReadError), tarfile.open(fileobj=io.BytesIO(RECIPES["truncated-tar-data"]()),
                                                        mode="r:") as tar:
        for member in tar:
            extracted = tar.extractfile(member)
            if extracted is not None:
                extracted.read()


def test_truncated_tar_header_ends_inside_the_second_header() -> None:
    data = RECIPES["truncated-tar-header"]()
    assert len(data) == 1024 + 300 and data[1024:1025] == b"b"
    assert [m.name for m in _members(data)] == ["a"]  # tarfile takes a cut header for the end: no error


def test_truncated_tar_data_claims_more_than_it_holds() -> None:
    data = RECIPES["truncated-tar-data"]()
    header = tarfile.TarInfo.frombuf(data[:512], "utf-8", "surrogateescape")
    assert header.size == 5000 > len(data) - 512


def test_corrupt_second_header_has_a_bad_checksum_that_tarfile_takes_for_the_end() -> None:
    data = RECIPES["corrupt-second-header"]()
    assert data[1024:1025] == b"b"
    with pytest.raises(tarfile.HeaderError):
        tarfile.TarInfo.frombuf(data[1024:1536], "utf-8", "surrogateescape")
    assert [m.name for m in _members(data)] == ["a"]  # why appliers must check headers themselves


def test_sparse_bomb_claims_a_gigabyte_in_a_few_kilobytes() -> None:
    data = RECIPES["sparse-bomb"]()
    [member] = _members(data)
    assert len(data) < 16 << 10
    assert member.size == 1 << 30 and member.sparse is not None


def test_pax_bomb_header_passes_the_metadata_limit() -> None:
    [member] = _members(RECIPES["pax-bomb"]())
    assert len(member.pax_headers["SCHILY.xattr.user.big"]) > CASES["pax-bomb"].options["max_metadata"]


def test_gzip_cases_have_the_gzip_media_type() -> None:
    for name in ("truncated-gzip", "not-gzip", "gzip-bomb"):
        assert CASES[name].media_type == LAYER_GZIP


def test_snapshot_sees_what_a_layer_could_change(tmp_path: Path) -> None:
    base = str(tmp_path)
    (tmp_path / "sentinel").mkdir()
    victim = tmp_path / "sentinel" / "victim"
    victim.write_bytes(b"x")
    (tmp_path / "rootfs").mkdir()
    before = snapshot(base, ("rootfs/**",))
    (tmp_path / "rootfs" / "inside").write_text("fine")
    assert changes(before, snapshot(base, ("rootfs/**",))) == []
    victim.chmod(0o600)
    (tmp_path / "planted").write_text("owned")
    assert changes(before, snapshot(base, ("rootfs/**",))) == ["planted: created", "sentinel/victim: mode changed"]
