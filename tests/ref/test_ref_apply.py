"""Applying one layer: changesets over existing files, attributes, devices, streams and their checks."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from trees import ROOT, Entry, chardev, directory, file, hardlink, make_tar, snapshot, symlink, whiteout

from conformance.ref.errors import LayerError, LayoutError, LimitError
from conformance.ref.layers import ApplyOptions, apply_layer
from conformance.ref.oci import LAYER_GZIP

needs_root = pytest.mark.skipif(not ROOT, reason="needs root (ownership, device nodes)")


def test_directory_over_directory_keeps_children_and_takes_attributes(scratch: Path) -> None:
    """OCI-LAYER-006: an entry dir over an existing dir replaces its attributes, children kept."""
    apply_layer(scratch, make_tar(directory("d", mode=0o700), file("d/x", b"x")))
    apply_layer(scratch, make_tar(directory("d", mode=0o751, uid=5 if ROOT else 0, mtime=1234)))
    info = (scratch / "d").stat()
    assert (scratch / "d" / "x").read_bytes() == b"x"
    assert (stat.S_IMODE(info.st_mode), info.st_mtime) == (0o751, 1234)
    if ROOT:
        assert info.st_uid == 5


def test_replacing_a_hardlinked_file_leaves_its_partner_alone(scratch: Path) -> None:
    """OCI-LAYER-007: any other collision is unlink + recreate, so `b` keeps the old content."""
    apply_layer(scratch, make_tar(file("a", b"old"), hardlink("b", "a")))
    apply_layer(scratch, make_tar(file("a", b"new")))
    assert (scratch / "a").read_bytes() == b"new" and (scratch / "b").read_bytes() == b"old"
    assert not os.path.samefile(scratch / "a", scratch / "b")


@pytest.mark.parametrize(("lower", "upper", "check"), [
    ((directory("x"), file("x/child", b"c")), (file("x", b"file"),), lambda p: p.read_bytes() == b"file"),
    ((file("x", b"file"),), (directory("x"), file("x/child", b"c")), lambda p: (p / "child").is_file()),
    ((directory("x"), file("x/child", b"c")), (symlink("x", "elsewhere"),), lambda p: os.readlink(p) == "elsewhere"),
    ((symlink("x", "target"), directory("target"), file("target/keep", b"k")), (file("x", b"file"),),
     lambda p: p.read_bytes() == b"file" and (p.parent / "target" / "keep").exists()),
], ids=["dir-to-file", "file-to-dir", "dir-to-symlink", "symlink-to-file"])
def test_type_changes_unlink_and_recreate(scratch: Path, lower: tuple[Entry, ...], upper: tuple[Entry, ...],
                                          check: object) -> None:
    apply_layer(scratch, make_tar(*lower))
    apply_layer(scratch, make_tar(*upper))
    assert callable(check) and check(scratch / "x")


def test_regular_file_over_symlink_does_not_write_through(scratch: Path) -> None:
    """OCI-LAYER-007c: L0 `s -> victim-outside`, L1 regular `s`: the symlink is replaced, not followed."""
    outside = scratch / "outside"
    outside.write_bytes(b"keep")
    root = scratch / "root"
    root.mkdir()
    apply_layer(root, make_tar(symlink("s", str(outside))))
    apply_layer(root, make_tar(file("s", b"new")))
    assert outside.read_bytes() == b"keep" and (root / "s").read_bytes() == b"new"


def test_attributes_are_applied(scratch: Path) -> None:
    """OCI-LAYER-003: mode (setuid too), owner, mtime with PAX sub-second precision, xattrs, symlink mtime."""
    pax = {"mtime": "1234567890.123456789", "SCHILY.xattr.user.greeting": "hello"}
    uid = 1234 if ROOT else os.geteuid()
    stats = apply_layer(scratch, make_tar(
        directory("d", mode=0o750, mtime=99), Entry("d/f", data=b"data", mode=0o4755, uid=uid, gid=uid, pax=pax),
        Entry("l", b"2", linkname="d/f", mtime=77)))
    f = (scratch / "d" / "f").stat()
    assert stat.S_IMODE(f.st_mode) == 0o4755 and (f.st_uid, f.st_gid) == (uid, uid)
    assert f.st_mtime_ns == 1234567890_123456789
    assert os.getxattr(scratch / "d" / "f", "user.greeting") == b"hello"
    assert os.lstat(scratch / "l").st_mtime == 77
    d = (scratch / "d").stat()
    assert (stat.S_IMODE(d.st_mode), d.st_mtime) == (0o750, 99), "directory attributes are set after its children"
    assert stats.files == 1 and stats.directories == 1 and stats.symlinks == 1 and stats.bytes_written == 4


def test_binary_xattr_values_survive(scratch: Path) -> None:
    value = bytes([0, 1, 2, 0xFF, 0xFE])
    apply_layer(scratch, make_tar(Entry("f", pax={"SCHILY.xattr.user.bin": value.decode("utf-8", "surrogateescape")})))
    assert os.getxattr(scratch / "f", "user.bin") == value


def test_overlay_xattrs_are_not_applied(scratch: Path) -> None:
    """H-15: a layer must not plant overlayfs state (redirect, metacopy, opaque) in a future lowerdir."""
    stats = apply_layer(scratch, make_tar(directory("d", pax={"SCHILY.xattr.trusted.overlay.redirect": "/etc",
                                                              "SCHILY.xattr.user.overlay.opaque": "y"})))
    assert not [n for n in os.listxattr(scratch / "d") if "overlay" in n]
    assert any("overlay xattrs not applied" in note for note in stats.notes)


def test_hardlink_to_symlink_links_the_symlink(scratch: Path) -> None:
    """OCI-HL-004: linkat without following: `h` is the symlink's inode."""
    apply_layer(scratch, make_tar(symlink("s", "/etc/passwd"), hardlink("h", "s")))
    assert os.readlink(scratch / "h") == "/etc/passwd"
    assert os.lstat(scratch / "h").st_ino == os.lstat(scratch / "s").st_ino


def test_hardlink_to_lower_file(scratch: Path) -> None:
    """OCI-HL-003: a link to a file of a lower layer links that file."""
    apply_layer(scratch, make_tar(file("a", b"lower")))
    apply_layer(scratch, make_tar(hardlink("b", "a")))
    assert os.path.samefile(scratch / "a", scratch / "b")


@needs_root
def test_devices_and_fifos_are_created_as_root(scratch: Path) -> None:
    stats = apply_layer(scratch, make_tar(directory("dev"), chardev("dev/null", 1, 3),
                                          Entry("dev/sda", b"4", device=(8, 0), mode=0o660),
                                          Entry("fifo", b"6", mode=0o640)))
    null, sda, fifo = (os.lstat(scratch / p) for p in ("dev/null", "dev/sda", "fifo"))
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    assert stat.S_IMODE(null.st_mode) == 0o666, "mode is exact, not masked by the umask"
    assert stat.S_ISBLK(sda.st_mode) and stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o640
    assert stats.devices == 2 and stats.fifos == 1


def test_devices_are_skipped_with_a_note_when_asked(scratch: Path) -> None:
    """Not root: devices are skipped (hardlinks to them too) and the stats say so."""
    stats = apply_layer(scratch, make_tar(chardev("null"), hardlink("null2", "null")),
                        options=ApplyOptions(devices="skip", ownership=False))
    assert not os.path.lexists(scratch / "null") and not os.path.lexists(scratch / "null2")
    assert stats.devices == 0
    assert any(note.startswith("device nodes skipped") and "'null'" in note for note in stats.notes)


def test_ownership_is_skipped_with_a_note_when_asked(scratch: Path) -> None:
    stats = apply_layer(scratch, make_tar(Entry("f", uid=4321, gid=4321)), options=ApplyOptions(ownership=False))
    assert (scratch / "f").stat().st_uid == os.geteuid()
    assert any(note.startswith("ownership not applied") for note in stats.notes)


def test_bad_devices_policy_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="devices policy"):
        ApplyOptions(devices="maybe")


def test_gzip_layer_stats_name_both_digests(scratch: Path) -> None:
    tar = make_tar(file("a", b"x" * 10000))
    blob = gzip.compress(tar, mtime=0)
    stats = apply_layer(scratch, io.BytesIO(blob), media_type=LAYER_GZIP)
    assert stats.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert stats.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert (stats.compressed_size, stats.size) == (len(blob), len(tar))


def test_multi_member_gzip_and_trailing_zeros_are_accepted(scratch: Path) -> None:
    tar = make_tar(file("a", b"x" * 10000))
    blob = gzip.compress(tar[:4096], mtime=0) + gzip.compress(tar[4096:], mtime=0) + bytes(100)
    stats = apply_layer(scratch, blob, media_type=LAYER_GZIP)
    assert (scratch / "a").read_bytes() == b"x" * 10000 and stats.diff_id.endswith(hashlib.sha256(tar).hexdigest())


def test_garbage_after_gzip_is_refused(scratch: Path) -> None:
    blob = gzip.compress(make_tar(file("a")), mtime=0) + b"garbage!"
    with pytest.raises(LayerError, match="corrupt gzip"):
        apply_layer(scratch, blob, media_type=LAYER_GZIP)


def test_expected_diff_id_is_checked(scratch: Path) -> None:
    with pytest.raises(LayerError, match="DiffID is sha256:"):
        apply_layer(scratch, make_tar(file("a")), expected_diff_id="sha256:" + "0" * 64)


def test_tar_without_end_marker_is_accepted(scratch: Path) -> None:
    """Go's archive/tar accepts a stream that stops right after its last entry; so does this."""
    tar = make_tar(file("a", b"x"))
    apply_layer(scratch, tar[:1024])
    assert (scratch / "a").read_bytes() == b"x"


def test_unsupported_media_type_is_refused(scratch: Path) -> None:
    """zstd is supported now (tests/ref/test_ref_zstd.py); a media type nobody knows is still refused."""
    with pytest.raises(LayoutError, match="'application/x-conformance-test' is not supported"):
        apply_layer(scratch, b"", media_type="application/x-conformance-test")


def test_whiteout_with_content_is_still_a_whiteout(scratch: Path) -> None:
    apply_layer(scratch, make_tar(file("a", b"x")))
    apply_layer(scratch, make_tar(Entry(".wh.a", data=b"ignored")))
    assert not os.path.lexists(scratch / "a") and not os.path.lexists(scratch / ".wh.a")


def test_implied_parents_are_created(scratch: Path) -> None:
    apply_layer(scratch, make_tar(file("a/b/c", b"x")))
    assert stat.S_IMODE((scratch / "a" / "b").stat().st_mode) == 0o755


def test_root_entry_sets_rootfs_attributes(scratch: Path) -> None:
    root = scratch / "root"
    root.mkdir()
    apply_layer(root, make_tar(directory("./", mode=0o711, mtime=4242), file("a")))
    assert (stat.S_IMODE(root.stat().st_mode), root.stat().st_mtime) == (0o711, 4242)


def test_whiteout_markers_count(scratch: Path) -> None:
    apply_layer(scratch, make_tar(directory("d"), file("d/x"), file("y")))
    stats = apply_layer(scratch, make_tar(whiteout(".wh.y"), whiteout("d/.wh..wh..opq")))
    assert (stats.whiteouts, stats.opaque_whiteouts) == (1, 1)


# The tar reader (conformance/ref/tarread.py): every header form GNU tar and tarfile write --------------

GNU_TAR = shutil.which("tar")
LONG = "l" * 60 + "/" + "o" * 60 + "/" + "n" * 60  # 182 characters: a GNU long name, or a ustar prefix


def _format_source(root: Path, *, long_names: bool, deep: bool = True) -> None:
    (root / "d").mkdir(parents=True)
    with open(root / "d" / "sparse", "wb") as sparse:  # data, a hole, data, a trailing hole
        sparse.write(b"head" * 1000)
        sparse.seek(3 << 20)
        sparse.write(b"middle")
        sparse.truncate(6 << 20)
    (root / "d" / "plain").write_bytes(bytes(range(256)) * 10)
    os.link(root / "d" / "plain", root / "d" / "linked")
    os.symlink("plain", root / "d" / "link")
    files = [root / "d" / "sparse", root / "d" / "plain"]
    if deep:
        nested = root / (LONG if long_names else "p" * 90 + "/" + "q" * 40)
        nested.mkdir(parents=True)
        (nested / "file").write_bytes(b"deep")
        files.append(nested / "file")
    if long_names:
        os.symlink("t" * 150, root / "d" / "long-target")
    for path in files:
        os.utime(path, ns=(1_234_567_890_123_456_789, 1_234_567_890_123_456_789))


@pytest.mark.skipif(GNU_TAR is None, reason="needs GNU tar")
@pytest.mark.parametrize("options", [
    ("--format=gnu", "--sparse"),  # GNU 'L'/'K' long names, old GNU sparse ('S')
    ("--format=oldgnu", "--sparse"),
    ("--format=posix", "--sparse", "--sparse-version=0.0"),
    ("--format=posix", "--sparse", "--sparse-version=0.1"),
    ("--format=posix", "--sparse", "--sparse-version=1.0"),
    ("--format=ustar",),  # the name prefix field
    ("--format=v7",),
])
def test_tar_formats_apply_like_gnu_tar(scratch: Path, options: tuple[str, ...]) -> None:
    """The hand-written header parser reads what GNU tar writes as GNU tar itself extracts it."""
    long_names = options[0] in ("--format=gnu", "--format=oldgnu", "--format=posix")
    source = scratch / "source"
    source.mkdir()
    _format_source(source, long_names=long_names, deep=options[0] != "--format=v7")  # v7: 100-byte names
    subprocess.run([GNU_TAR or "tar", *options, "--numeric-owner", "-C", str(source), "-cf", str(scratch / "l.tar"),
                    "."], check=True, capture_output=True)
    ours, theirs = scratch / "ours", scratch / "theirs"
    ours.mkdir()
    theirs.mkdir()
    stats = apply_layer(ours, (scratch / "l.tar").read_bytes())
    subprocess.run([GNU_TAR or "tar", "--numeric-owner", "--same-permissions", "--same-owner", "-C", str(theirs),
                    "-xf", str(scratch / "l.tar")], check=True, capture_output=True)
    assert snapshot(ours, nlink=True, exclude=["l" * 60]) == snapshot(theirs, nlink=True, exclude=["l" * 60])
    assert (ours / "d" / "sparse").stat().st_size == 6 << 20 and stats.hardlinks == 1
    if long_names:
        assert (ours / LONG / "file").read_bytes() == b"deep"
        assert os.readlink(ours / "d" / "long-target") == "t" * 150
    if "--sparse" in options:
        assert stats.bytes_written < 1 << 20, "holes stay holes"
        assert os.stat(ours / "d" / "sparse").st_blocks * 512 < 1 << 20


def test_base256_numbers_and_global_pax_headers(scratch: Path) -> None:
    """GNU base-256 fields (tarfile writes them for numbers too big for octal); `g` records apply to all."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("big")
        info.uid = info.gid = 1 << 30
        info.mtime = 1 << 33  # past 8**11: base-256 (and still a time in ns)
        tar.addfile(info)
    (scratch / "a").mkdir()
    apply_layer(scratch / "a", buffer.getvalue(), options=ApplyOptions(ownership=ROOT))
    assert (scratch / "a" / "big").stat().st_mtime_ns == (1 << 33) * 10**9
    if ROOT:
        assert (scratch / "a" / "big").stat().st_uid == 1 << 30
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"mtime": "4242.5"}) as tar:
        tar.addfile(tarfile.TarInfo("x"))
    (scratch / "b").mkdir()
    apply_layer(scratch / "b", buffer.getvalue())
    assert (scratch / "b" / "x").stat().st_mtime_ns == 4242_500_000_000


@pytest.mark.parametrize(("damage", "expect"), [
    (lambda t: t[:512] + b"garbage " + t[520:], "malformed PAX record"),
    (lambda t: t[:124] + b"0000000007x\0" + t[136:], r"corrupt tar header \(bad"),
    (lambda t: t[:1024] + bytes(512) + t[1536:], "end-of-archive block after an extended header"),
    (lambda t: b"", "empty stream"),
])
def test_damaged_headers_are_refused(scratch: Path, damage: Callable[[bytes], bytes], expect: str) -> None:
    tar = make_tar(Entry("f", data=b"x", pax={"SCHILY.xattr.user.a": "b"}))
    with pytest.raises(LayerError, match=expect):
        apply_layer(scratch, damage(tar))


LONG_GNU_NAME = "/".join(["n" * 200] * 17)  # 3416 characters (a path under PATH_MAX, for the cleanup)


def test_a_long_gnu_name_is_bounded_by_max_metadata(scratch: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo(LONG_GNU_NAME))
    with pytest.raises(LimitError, match="metadata"):
        apply_layer(scratch, buffer.getvalue(), options=ApplyOptions(max_metadata=2048))
    apply_layer(scratch, buffer.getvalue(), options=ApplyOptions(max_metadata=8192))
    assert (scratch / LONG_GNU_NAME).is_file()
