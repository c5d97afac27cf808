"""Containment primitives: name cleaning, fd walking inside the rootfs, removal that never follows links."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from jail import Jail
from trees import directory, file, make_tar, symlink, whiteout

from conformance.ref.errors import UnsafePathError
from conformance.ref.layers import apply_layer
from conformance.ref.tarsafe import Root, clean_name, remove_tree


@pytest.mark.parametrize(("name", "parts"), [
    ("etc/passwd", ("etc", "passwd")), ("/etc/passwd", ("etc", "passwd")), ("./a//b/", ("a", "b")),
    ("a/./b", ("a", "b")), ("a/../b", ("b",)), (".", ()), ("/", ()), ("", ()), ("a/b/../../c", ("c",)),
])
def test_clean_name(name: str, parts: tuple[str, ...]) -> None:
    assert clean_name(name) == parts


@pytest.mark.parametrize("name", ["..", "../x", "a/../../x", "./../x", "/../x", "a\x00b"])
def test_clean_name_refuses_escapes_and_nul(name: str) -> None:
    with pytest.raises(UnsafePathError):
        clean_name(name)


def test_open_dir_follows_only_symlinks_that_stay_inside(jail: Jail) -> None:
    root = jail.rootfs
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "up").symlink_to("usr/../usr/lib/..")
    (root / "abs").symlink_to("/usr")
    (root / "out").symlink_to("../sentinel")
    (root / "file").write_text("x")
    with Root(root) as opened:
        fd = opened.open_dir(("lib",), create=False)
        assert fd is not None and os.path.samestat(os.fstat(fd), os.stat(root / "usr" / "lib"))
        fd = opened.open_dir(("up", "lib"), create=False)
        assert fd is not None and os.path.samestat(os.fstat(fd), os.stat(root / "usr" / "lib"))
        assert opened.open_dir(("missing", "deeper"), create=False) is None
        with pytest.raises(UnsafePathError, match="absolute symlink"):
            opened.open_dir(("abs", "bin"), create=True)
        with pytest.raises(UnsafePathError, match="escapes the rootfs"):
            opened.open_dir(("out",), create=True)
        with pytest.raises(UnsafePathError, match="parent 'file' is not a directory"):
            opened.open_dir(("file", "x"), create=True)
        created = opened.open_dir(("new", "deep"), create=True)
        assert created is not None and (root / "new" / "deep").is_dir()
    jail.check()


def test_remove_tree_removes_symlinks_without_following_them(jail: Jail) -> None:
    tree = jail.rootfs / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "to-sentinel").symlink_to(jail.sentinel)
    (tree / "to-victim").symlink_to(jail.victim)
    fd = os.open(jail.rootfs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        remove_tree(fd, "tree")
    finally:
        os.close(fd)
    assert not (jail.rootfs / "tree").exists()
    jail.check()


def test_cached_directories_are_forgotten_when_something_is_removed(scratch: Path) -> None:
    """`l -> d` in a lower layer; the next layer writes through `l`, deletes `d` and makes it again: the
    write after the deletion must land in the new `d`, not in the unlinked old one."""
    apply_layer(scratch, make_tar(directory("d"), file("d/old"), symlink("l", "d")))
    apply_layer(scratch, make_tar(file("l/x"), whiteout(".wh.d"), directory("d"), file("l/y", b"y")))
    assert sorted(os.listdir(scratch / "d")) == ["y"]
