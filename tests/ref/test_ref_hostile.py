"""Hostile layers are refused, or contained, and nothing outside the rootfs changes (overlay_layers.md § 3)."""

from __future__ import annotations

import os
from dataclasses import replace

import hostile
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jail import Jail, make_jail, make_scratch, remove_scratch
from trees import Entry, chardev, directory, file, hardlink, make_tar, symlink

from conformance.ref.errors import LayerError, LimitError, RefError
from conformance.ref.layers import ApplyOptions, apply_layer


@pytest.mark.parametrize("name", sorted(hostile.BUILDERS))
def test_hostile_layer_is_refused_and_nothing_outside_changes(name: str, jail: Jail) -> None:
    """Each case's last layer MUST fail with an error naming the entry and the reason; the sentinel
    beside the rootfs stays byte-for-byte, mode, owner, time, xattr and link-count identical."""
    case = hostile.build(name, jail.sentinel)
    for layer in case.layers[:-1]:
        apply_layer(jail.rootfs, layer)
    with pytest.raises(RefError) as caught:
        apply_layer(jail.rootfs, case.layers[-1], media_type=case.media_type, options=ApplyOptions(**case.options),
                    label="sha256:hostile..")
    message = str(caught.value)
    assert case.expect in message, f"{case.hazard} {name}: expected {case.expect!r} in {message!r}"
    assert message.startswith("layer sha256:hostile..: "), message
    if case.entry is not None:
        assert f"entry {case.entry!r}" in message, message
    jail.check()


@pytest.mark.parametrize("name", sorted(hostile.CONTAINED))
def test_hostile_layer_is_contained(name: str, jail: Jail) -> None:
    """Absolute names, absolute hardlink targets and harmless `..` are taken inside the rootfs."""
    layer, inside = hostile.build_contained(name, jail.sentinel)
    apply_layer(jail.rootfs, layer)
    assert os.path.lexists(jail.rootfs / inside)
    jail.check()


def test_absolute_hardlink_links_the_file_inside_the_rootfs(jail: Jail) -> None:
    layer, _ = hostile.build_contained("hardlink-absolute-inside", jail.sentinel)
    apply_layer(jail.rootfs, layer)
    assert os.path.samefile(jail.rootfs / "localpasswd", jail.rootfs / "etc" / "passwd")


def test_errors_carry_their_parts() -> None:
    error = LayerError("path escapes the rootfs", layer="sha256:ab12..", entry="../etc/passwd")
    assert str(error) == "layer sha256:ab12..: entry '../etc/passwd': path escapes the rootfs"
    assert (error.layer, error.entry, error.reason) == ("sha256:ab12..", "../etc/passwd", "path escapes the rootfs")
    assert isinstance(error.within(layer="other"), LayerError) and error.within(layer="other").layer == "sha256:ab12.."
    assert isinstance(LimitError("x").within(entry="e"), LimitError)


def test_a_refused_layer_reports_the_last_good_entry_for_corrupt_headers(jail: Jail) -> None:
    case = hostile.build("corrupt-second-header", jail.sentinel)
    with pytest.raises(LayerError) as caught:
        apply_layer(jail.rootfs, case.layers[-1])
    assert caught.value.entry == "a" and "corrupt tar header" in caught.value.reason


# Fuzzing: random layers made of hostile pieces --------------------------------------------------------

# Plain names are likelier than hostile ones, so that layers get deep enough for pieces to interact
# (a symlink `a -> /`, then `a/b`).
COMPONENTS = st.sampled_from(["a"] * 4 + ["b"] * 4 + ["..", ".", "", ".wh.a", ".wh..wh..opq", ".wh..", "sentinel"])
NAMES = st.builds(lambda lead, parts: lead + "/".join(parts), st.sampled_from(["", "", "/", "./"]),
                  st.lists(COMPONENTS, min_size=1, max_size=3))
TARGETS = st.one_of(st.sampled_from(["/", "..", "../..", "../sentinel", "../sentinel/victim", "{sentinel}",
                                     "{sentinel}/victim", "/etc/passwd", "a", "b", "a/b", "."]), NAMES)


def fuzz_entry(name: str, kind: str, target: str) -> Entry:
    if kind == "dir":
        return directory(name)
    if kind == "symlink":
        return symlink(name, target)
    if kind == "hardlink":
        return hardlink(name, target)
    if kind == "device":
        return chardev(name)
    return file(name, b"planted")


ENTRIES = st.builds(fuzz_entry, NAMES, st.sampled_from(["file", "dir", "symlink", "hardlink", "device"]), TARGETS)


@settings(max_examples=300, deadline=None)
@given(layers=st.lists(st.lists(ENTRIES, min_size=1, max_size=6), min_size=1, max_size=3))
def test_random_hostile_layers_are_refused_or_contained(layers: list[list[Entry]]) -> None:
    """Any layer built from `..`, absolute names, whiteout names, symlinks and hardlinks pointing out:
    apply either succeeds or raises a RefError; the sentinel never changes; no `.wh.` name is left."""
    scratch = make_scratch()
    try:
        jail = make_jail(scratch)
        for entries in layers:
            resolved = [replace(e, linkname=e.linkname.replace("{sentinel}", str(jail.sentinel))) for e in entries]
            try:
                apply_layer(jail.rootfs, make_tar(*resolved))
            except RefError:
                break
        jail.check()
        for _, dirnames, filenames in os.walk(jail.rootfs):
            assert not [n for n in dirnames + filenames if n.startswith(".wh.")]
    finally:
        remove_scratch(scratch)
