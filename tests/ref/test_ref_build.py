"""The reference Containerfile builder: parsing, layers per step, config and history, cache, safety."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from trees import ROOT

from conformance.ref.build import BuildResult, build_image
from conformance.ref.buildcache import CacheWarning
from conformance.ref.containerfile import Add, Cmd, Copy, Entrypoint, Env, From, Label, User, Workdir, parse
from conformance.ref.errors import BuildError
from conformance.ref.image import apply_image
from conformance.ref.layout import Layout

# Parsing -------------------------------------------------------------------------------------------


def test_each_instruction_parses_to_its_dataclass() -> None:
    """Every instruction of the subset becomes its frozen dataclass, with its line and text kept."""
    steps = parse("# a comment\n\nFROM scratch\nCOPY --chown=1:2 --chmod=640 a b /dest/\nADD x.tar /x/\n"
                  "ENV A=1 B=\"two words\"\nENV LEGACY some value\nLABEL k=v other=\"o v\"\nWORKDIR /w\n"
                  "USER 1000:1000\nCMD [\"/bin/echo\", \"hi\"]\nENTRYPOINT exec /bin/app\n")
    assert steps == (
        From(3, "FROM scratch", "scratch"),
        Copy(4, "COPY --chown=1:2 --chmod=640 a b /dest/", ("a", "b"), "/dest/", (1, 2), 0o640),
        Add(5, "ADD x.tar /x/", ("x.tar",), "/x/"),
        Env(6, 'ENV A=1 B="two words"', (("A", "1"), ("B", "two words"))),
        Env(7, "ENV LEGACY some value", (("LEGACY", "some value"),)),
        Label(8, 'LABEL k=v other="o v"', (("k", "v"), ("other", "o v"))),
        Workdir(9, "WORKDIR /w", "/w"),
        User(10, "USER 1000:1000", "1000:1000"),
        Cmd(11, 'CMD ["/bin/echo", "hi"]', ("/bin/echo", "hi"), False),
        Entrypoint(12, "ENTRYPOINT exec /bin/app", ("/bin/sh", "-c", "exec /bin/app"), True),
    )
    with pytest.raises(AttributeError):
        steps[0].line = 2  # type: ignore[misc]


def test_continuations_join_and_skip_comments() -> None:
    """A trailing backslash continues the instruction; comment lines inside it are skipped; the first line counts."""
    steps = parse("FROM scratch\ncopy a \\\n  # between\n  b \\\n\n  /d/\nCMD echo one \\\n two\n")
    assert steps[1] == Copy(2, "copy a   b   /d/", ("a", "b"), "/d/")
    assert steps[2] == Cmd(7, "CMD echo one  two", ("/bin/sh", "-c", "echo one  two"), True)


def test_exec_form_needs_a_json_list_of_strings() -> None:
    """CMD ["a", 1] is not exec form, so Docker runs it in a shell: so does the parser."""
    [_, exec_form, shell_form, copy] = parse('FROM scratch\nCMD ["a","b c"]\nCMD ["a", 1]\nCOPY ["a b", "/d/"]\n')
    assert exec_form == Cmd(2, 'CMD ["a","b c"]', ("a", "b c"), False)
    assert shell_form == Cmd(3, 'CMD ["a", 1]', ("/bin/sh", "-c", '["a", 1]'), True)
    assert isinstance(copy, Copy) and copy.sources == ("a b",) and copy.dest == "/d/"


@pytest.mark.parametrize(("text", "line", "words"), [
    ("FROM scratch\nCOPY a /a\nARG x\n", 3, "ARG is not supported"),
    ("FROM scratch\n\nFROBNICATE x\n", 3, "unknown instruction 'FROBNICATE'"),
    ("FROM scratch\nEXPOSE 80\n", 2, "EXPOSE is not supported"),
    ("COPY a /a\n", 1, "the first instruction must be FROM"),
    ("FROM scratch\nFROM scratch\n", 2, "multi-stage builds"),
    ("FROM scratch AS one\n", 1, "multi-stage builds"),
    ("FROM scratch\nCOPY a\n", 2, "at least one source and a destination"),
    ("FROM scratch\nCOPY --chown=root a /a\n", 2, "only numeric uid:gid"),
    ("FROM scratch\nCOPY --chmod=9z a /a\n", 2, "an octal mode"),
    ("FROM scratch\nCOPY --from=build a /a\n", 2, "--from needs multi-stage"),
    ("FROM scratch\nENV A=$B\n", 2, "variable substitution"),
    ("FROM scratch\nENV A=1 junk\n", 2, "'junk' is not key=value"),
    ("FROM scratch\nUSER a b\n", 2, "USER takes one word"),
    ("FROM scratch\nWORKDIR\n", 2, "WORKDIR needs arguments"),
])
def test_errors_name_the_line_and_what_to_do(text: str, line: int, words: str) -> None:
    """Anything outside the subset is refused with the line number and the instruction, never skipped."""
    with pytest.raises(BuildError) as caught:
        parse(text)
    assert caught.value.line == line
    assert words in str(caught.value)
    assert str(caught.value).startswith(f"Containerfile line {line} (")


def test_an_empty_containerfile_is_refused() -> None:
    """Comments only: no FROM, no image."""
    with pytest.raises(BuildError, match="no instructions"):
        parse("# nothing\n\n")


# Building ------------------------------------------------------------------------------------------


def _context(root: Path) -> Path:
    context = root / "context"
    (context / "dir" / "sub").mkdir(parents=True)
    (context / "a.txt").write_text("hello\n")
    (context / "dir" / "x").write_text("x\n")
    (context / "dir" / "x").chmod(0o600)
    (context / "dir" / "sub" / "y").write_text("y\n")
    os.symlink("x", context / "dir" / "link")
    _tar(context / "arch.tar.gz", {"inner/f": b"from the tar\n"}, gzip=True)
    return context


def _tar(path: Path, files: dict[str, bytes], *, gzip: bool = False,
         extra: list[tarfile.TarInfo] | None = None) -> None:
    with tarfile.open(path, "w:gz" if gzip else "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_000_000_000
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)


FULL = """\
FROM scratch
COPY a.txt /a.txt
COPY dir /opt/dir/
ADD arch.tar.gz /ex/
ENV A=1 B="two words"
WORKDIR /work/here
WORKDIR /opt
USER 1000:1000
LABEL x=y
CMD ["/bin/sh", "-c", "echo"]
"""


def _build(root: Path, text: str, tag: str = "t", **options: Any) -> BuildResult:
    containerfile = root / f"Containerfile.{tag}"
    containerfile.write_text(text)
    return build_image(containerfile, root / "context", root / "layout", tag, **options)


def _config(root: Path, tag: str = "t") -> dict[str, Any]:
    layout = Layout(root / "layout")
    manifest = layout.manifest(layout.resolve(tag))
    doc: dict[str, Any] = layout.read_json(manifest.config, "config")
    return doc


def _members(root: Path, digest: str) -> list[tuple[str, str, int, int, int]]:
    """(name, type, mode, uid, gid) of a layer's entries."""
    layout = Layout(root / "layout")
    data = (layout.path / "blobs" / "sha256" / digest[7:]).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, m.type.decode(), m.mode, m.uid, m.gid) for m in tar]


def test_one_layer_per_copy_add_and_new_workdir(scratch: Path) -> None:
    """COPY, ADD and a WORKDIR that creates its directory make layers; the other steps are empty_layer."""
    _context(scratch)
    result = _build(scratch, FULL)
    layered = [step.instruction.split()[0] + " " + step.instruction.split()[-1] for step in result.steps if step.layer]
    assert layered == ["COPY /a.txt", "COPY /opt/dir/", "ADD /ex/", "WORKDIR /work/here"]
    config = _config(scratch)
    assert [h.get("empty_layer", False) for h in config["history"]] == [
        False, False, False, True, False, True, True, True, True]
    assert len(config["rootfs"]["diff_ids"]) == sum(1 for h in config["history"] if not h.get("empty_layer"))
    assert [h["created_by"] for h in config["history"]] == [line for line in FULL.splitlines()[1:]]
    assert {h["created"] for h in config["history"]} == {"1970-01-01T00:00:00Z"}
    assert config["config"] == {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1", "B=two words"],
        "WorkingDir": "/opt", "User": "1000:1000", "Labels": {"x": "y"}, "Cmd": ["/bin/sh", "-c", "echo"]}
    steps = [step for step in result.steps if step.layer]
    assert steps[0].layer is not None and _members(scratch, steps[0].layer.digest) == [("a.txt", "0", 0o644, 0, 0)]
    assert steps[3].layer is not None and steps[3].layer.file_count == 2


def test_applying_the_built_image_gives_the_tree(scratch: Path) -> None:
    """apply_image of the result: the copied files with their modes, the symlink kept, the tar extracted."""
    _context(scratch)
    _build(scratch, FULL)
    rootfs = scratch / "rootfs"
    rootfs.mkdir()
    apply_image(scratch / "layout", "t", rootfs)
    found = {str(p.relative_to(rootfs)): p for p in rootfs.rglob("*")}
    assert sorted(found) == ["a.txt", "ex", "ex/inner", "ex/inner/f", "opt", "opt/dir", "opt/dir/link", "opt/dir/sub",
                             "opt/dir/sub/y", "opt/dir/x", "work", "work/here"]
    assert (rootfs / "opt/dir/x").stat().st_mode & 0o7777 == 0o600
    assert os.readlink(rootfs / "opt/dir/link") == "x"
    assert (rootfs / "ex/inner/f").read_bytes() == b"from the tar\n"
    assert {p.lstat().st_mtime for p in found.values()} == {0}


def test_copy_rules_follow_docker(scratch: Path) -> None:
    """File into a dir, file to a new name, relative to WORKDIR, --chown on created dirs, --chmod on files."""
    _context(scratch)
    _build(scratch, "FROM scratch\nCOPY a.txt /renamed\nWORKDIR /w\nCOPY a.txt .\n"
                    "COPY --chown=5:6 --chmod=640 a.txt dir /multi/\n")
    rootfs = scratch / "rootfs"
    rootfs.mkdir()
    apply_image(scratch / "layout", "t", rootfs)
    assert (rootfs / "renamed").read_text() == "hello\n"
    assert (rootfs / "w/a.txt").is_file()
    multi = rootfs / "multi"
    assert sorted(p.name for p in multi.iterdir()) == ["a.txt", "link", "sub", "x"]
    assert multi.stat().st_mode & 0o7777 == 0o755
    assert (multi / "a.txt").stat().st_mode & 0o7777 == 0o640
    if ROOT:
        assert (multi.stat().st_uid, multi.stat().st_gid) == (5, 6)
        assert ((multi / "x").stat().st_uid, (multi / "x").stat().st_gid) == (5, 6)


def test_several_sources_need_a_directory_destination(scratch: Path) -> None:
    """COPY a b /file (no trailing slash, not a directory) is refused, naming the line."""
    _context(scratch)
    with pytest.raises(BuildError, match=r"line 2 .*must be a directory ending with '/'"):
        _build(scratch, "FROM scratch\nCOPY a.txt dir /file\n")


def test_entrypoint_clears_a_cmd_from_the_base(scratch: Path) -> None:
    """The Dockerfile reference: ENTRYPOINT resets a CMD inherited from the base image."""
    _context(scratch)
    _build(scratch, "FROM scratch\nCOPY a.txt /\nCMD [\"base\"]\n", tag="base")
    _build(scratch, "FROM oci:../layout:base\nENTRYPOINT [\"/app\"]\n")
    assert "Cmd" not in _config(scratch)["config"]
    assert _config(scratch)["config"]["Entrypoint"] == ["/app"]


def test_two_builds_give_the_same_manifest_digest(scratch: Path) -> None:
    """Same Containerfile and context, other layout, touched sources: the same digests (times are not kept)."""
    context = _context(scratch)
    first = _build(scratch, FULL, tag="one")
    os.utime(context / "a.txt", (5, 5))
    (scratch / "layout").rename(scratch / "first-layout")
    second = _build(scratch, FULL, tag="one")
    assert first == second
    other = _build(scratch, FULL, tag="epoch", source_date_epoch=1_700_000_000)
    assert other.manifest_digest != first.manifest_digest


def test_uncompressed_layers_on_request(scratch: Path) -> None:
    """compression="none" writes plain tar layers; the DiffIDs are the same as with gzip."""
    _context(scratch)
    gzip = _build(scratch, FULL, tag="gz")
    plain = _build(scratch, FULL, tag="plain", compression="none")
    layout = Layout(scratch / "layout")
    manifest = layout.manifest(layout.resolve("plain"))
    assert {layer.media_type for layer in manifest.layers} == {"application/vnd.oci.image.layer.v1.tar"}
    assert [s.layer.diff_id for s in plain.steps if s.layer] == [s.layer.diff_id for s in gzip.steps if s.layer]


# The cache -----------------------------------------------------------------------------------------


def test_cache_reuses_every_step_then_rebuilds_from_the_changed_one(scratch: Path) -> None:
    """Nothing changed: every step is a hit. One copied file changed: that step and every later one rebuild."""
    context = _context(scratch)
    cache = scratch / "cache"
    first = _build(scratch, FULL, cache=cache)
    assert not any(step.cached for step in first.steps)
    again = _build(scratch, FULL, cache=cache)
    assert all(step.cached for step in again.steps)
    assert again == BuildResult(first.manifest_digest, first.config_digest,
                                tuple(type(s)(s.instruction, s.line, s.layer, True) for s in first.steps))
    (context / "dir" / "x").write_text("changed\n")
    changed = _build(scratch, FULL, cache=cache)
    assert [step.cached for step in changed.steps] == [True] + [False] * 8
    assert changed.manifest_digest != first.manifest_digest


def test_a_corrupt_cache_is_ignored_with_a_warning(scratch: Path) -> None:
    """A blob whose content does not match its digest, or an index that is not JSON, is never trusted."""
    _context(scratch)
    cache = scratch / "cache"
    first = _build(scratch, FULL, cache=cache)
    blobs = sorted((cache / "blobs" / "sha256").iterdir())
    blobs[0].write_bytes(b"not the layer")
    with pytest.warns(CacheWarning, match="holds content of digest"):
        damaged = _build(scratch, FULL, cache=cache)
    assert damaged.manifest_digest == first.manifest_digest
    assert not all(step.cached for step in damaged.steps)
    (cache / "index.json").write_text("{not json")
    with pytest.warns(CacheWarning, match="not a JSON object"):
        again = _build(scratch, FULL, cache=cache)
    assert again.manifest_digest == first.manifest_digest and not any(step.cached for step in again.steps)
    index = json.loads((cache / "index.json").read_text())
    key = sorted(index)[0]
    index[key] = {"empty_layer": "yes"}
    (cache / "index.json").write_text(json.dumps(index))
    with pytest.warns(CacheWarning, match="malformed entry"):
        assert _build(scratch, FULL, cache=cache).manifest_digest == first.manifest_digest


# Bases ---------------------------------------------------------------------------------------------


def test_from_an_oci_layout_carries_the_base_over(scratch: Path) -> None:
    """FROM oci:<layout>:<tag> of a built image: its layers, history and config come first."""
    _context(scratch)
    base = _build(scratch, FULL, tag="base")
    result = _build(scratch, "FROM oci:../layout:base\nCOPY a.txt /again\nENV C=3\n", tag="child")
    layout = Layout(scratch / "layout")
    parent = layout.manifest(layout.resolve("base"))
    child = layout.manifest(layout.resolve("child"))
    assert child.layers[:len(parent.layers)] == parent.layers
    assert len(child.layers) == len(parent.layers) + 1
    config = _config(scratch, "child")
    assert [h["created_by"] for h in config["history"]][-2:] == ["COPY a.txt /again", "ENV C=3"]
    assert config["config"]["Env"][-1] == "C=3" and config["config"]["WorkingDir"] == "/opt"
    assert result.steps[0].layer is not None and base.manifest_digest != result.manifest_digest
    rootfs = scratch / "rootfs"
    rootfs.mkdir()
    apply_image(layout, "child", rootfs)
    assert (rootfs / "again").read_text() == "hello\n" and (rootfs / "ex/inner/f").is_file()


def test_from_an_oci_archive(scratch: Path) -> None:
    """FROM oci-archive:<tar>: the layout in a tar, unpacked to a temporary directory."""
    _context(scratch)
    _build(scratch, "FROM scratch\nCOPY a.txt /a\n", tag="base")
    with tarfile.open(scratch / "context" / "base.tar", "w") as tar:
        for name in ("oci-layout", "index.json", "blobs"):
            tar.add(scratch / "layout" / name, arcname=name)
    _build(scratch, "FROM oci-archive:base.tar:base\nCOPY a.txt /b\n", tag="child")
    assert len(_config(scratch, "child")["rootfs"]["diff_ids"]) == 2


def test_only_local_bases(scratch: Path) -> None:
    """A registry reference is refused: nothing is pulled."""
    _context(scratch)
    with pytest.raises(BuildError, match=r"line 1 .*nothing is pulled"):
        _build(scratch, "FROM debian:12\n")


# Safety --------------------------------------------------------------------------------------------


def test_add_extracts_a_tar_and_copies_other_files(scratch: Path) -> None:
    """ADD of a .tar extracts it into the destination; a file that only looks like one is copied."""
    context = _context(scratch)
    _tar(context / "plain.tar", {"p/q": b"q\n"})
    (context / "fake.tar").write_text("not a tar at all\n")
    _build(scratch, "FROM scratch\nADD plain.tar /x/\nADD fake.tar /y/\n")
    rootfs = scratch / "rootfs"
    rootfs.mkdir()
    apply_image(scratch / "layout", "t", rootfs)
    assert (rootfs / "x/p/q").read_text() == "q\n"
    assert (rootfs / "y/fake.tar").read_text() == "not a tar at all\n"


@pytest.mark.parametrize("hostile", ["dotdot", "symlink"])
def test_a_hostile_tar_in_add_is_refused(scratch: Path, hostile: str) -> None:
    """An archive entry that climbs out, or writes through a symlink out of it, is refused before any layer."""
    context = _context(scratch)
    if hostile == "dotdot":
        _tar(context / "evil.tar", {"../../../escaped": b"x"})
    else:
        link = tarfile.TarInfo("out")
        link.type, link.linkname = tarfile.SYMTYPE, "/"
        _tar(context / "evil.tar", {}, extra=[link])
        with tarfile.open(context / "evil.tar", "a") as tar:
            info = tarfile.TarInfo("out/escaped")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BuildError, match=r"line 2 \(ADD evil.tar /x/\): archive refused: .*fix or remove"):
        _build(scratch, "FROM scratch\nADD evil.tar /x/\n")
    assert not (scratch / "escaped").exists() and not Path("/escaped").exists()


@pytest.mark.parametrize(("source", "words"), [
    ("../outside", "escapes the build context"),
    ("sneaky", "leads out of the build context"),
    ("missing", "is not in the build context"),
    ("nothing*", "no file in the context matches"),
    ("https://example.com/x", "remote source"),
])
def test_sources_outside_the_context_are_refused(scratch: Path, source: str, words: str) -> None:
    """COPY of ../x, of a symlink leading out, of nothing, or of a URL: refused, naming the line."""
    context = _context(scratch)
    (scratch / "outside").write_text("secret\n")
    os.symlink("../outside", context / "sneaky")
    with pytest.raises(BuildError, match=r"line 2 ") as caught:
        _build(scratch, f"FROM scratch\nCOPY {source} /d/\n")
    assert words in str(caught.value)


def test_a_destination_through_an_escaping_symlink_is_refused(scratch: Path) -> None:
    """The image side is contained too: a base symlink to / cannot carry a COPY out of the rootfs."""
    context = _context(scratch)
    os.symlink("/", context / "dir" / "root")
    _build(scratch, "FROM scratch\nCOPY dir /\n", tag="base")
    with pytest.raises(BuildError, match=r"line 2 .*destination /root"):
        _build(scratch, "FROM oci:../layout:base\nCOPY a.txt /root/tmp/\n")


def test_glob_sources_copy_in_byte_order(scratch: Path) -> None:
    """COPY *.txt: every match, into the destination directory."""
    context = _context(scratch)
    (context / "b.txt").write_text("b\n")
    result = _build(scratch, "FROM scratch\nCOPY *.txt /t/\n")
    step = result.steps[0]
    assert step.layer is not None
    assert [m[0] for m in _members(scratch, step.layer.digest)] == ["t", "t/a.txt", "t/b.txt"]


def test_from_a_docker_archive(scratch: Path) -> None:
    """FROM docker-archive:<tar>:<tag>: Docker 20.10's save format (manifest.json, config, <id>/layer.tar)."""
    context = _context(scratch)
    layer = io.BytesIO()
    _tar(scratch / "layer.tar", {"etc/hostname": b"base\n"})
    layer.write((scratch / "layer.tar").read_bytes())
    diff_id = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps([{"Config": "c.json", "RepoTags": ["base:1"], "Layers": ["l/layer.tar"]}]).encode()
    with tarfile.open(context / "base.tar", "w") as tar:
        for name, data in [("c.json", config), ("l/layer.tar", layer.getvalue()), ("manifest.json", manifest)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    _build(scratch, "FROM docker-archive:base.tar:base:1\nCOPY a.txt /etc/\n")
    config_doc = _config(scratch)
    assert config_doc["rootfs"]["diff_ids"][0] == diff_id and len(config_doc["rootfs"]["diff_ids"]) == 2
    assert config_doc["config"] == {"Env": ["PATH=/bin"], "Cmd": ["sh"]}
    assert [h.get("comment") for h in config_doc["history"]] == ["base layer", None]
    rootfs = scratch / "rootfs"
    rootfs.mkdir()
    apply_image(scratch / "layout", "t", rootfs)
    assert sorted(p.name for p in (rootfs / "etc").iterdir()) == ["a.txt", "hostname"]
