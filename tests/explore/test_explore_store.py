"""The reference layer store: overlay-format diffs keyed by ChainID, and a mounted container equal to apply_image."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from conformance.ref.image import apply_image
from conformance.ref.layout import Layout
from conformance.ref.store import OPAQUE_XATTR, Store, StoreError
from tests.explore.conftest import needs_overlay, scratch_dir, store_in
from tests.explore.demo import change_container

pytestmark = needs_overlay()


def _tree(root: Path) -> dict[str, tuple[str, object]]:
    """Names, types and contents (symlink targets) under root, never following links."""
    found: dict[str, tuple[str, object]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            info = full.lstat()
            if stat.S_ISREG(info.st_mode):
                found[str(full.relative_to(root))] = ("file", hashlib.sha256(full.read_bytes()).hexdigest())
            elif stat.S_ISLNK(info.st_mode):
                found[str(full.relative_to(root))] = ("symlink", os.readlink(full))
            else:
                found[str(full.relative_to(root))] = (stat.filemode(info.st_mode)[0], None)
    return found


def test_unpack_turns_whiteouts_into_devices_and_opaque_markers_into_xattrs(demo: Layout, store: Store) -> None:
    """overlayfs.rst: a whiteout is a 0/0 character device, an opaque directory has trusted.overlay.opaque=y."""
    image = store.unpack(demo, "demo")
    install = image.layers[1].path
    motd = (install / "etc" / "motd").lstat()
    assert stat.S_ISCHR(motd.st_mode) and motd.st_rdev == os.makedev(0, 0)
    assert os.getxattr(install / "var" / "cache" / "apt", OPAQUE_XATTR) == b"y"
    assert sorted(os.listdir(install / "var" / "cache" / "apt")) == ["lists.lock"]
    for layer in image.layers:
        assert not [p for p in _tree(layer.path) if Path(p).name.startswith(".wh.")]
    assert [layer.path.parent.name for layer in image.layers] == [layer.chain_id.split(":")[1]
                                                                  for layer in image.layers]


def test_layers_are_shared_by_chain_id(demo: Layout, store: Store) -> None:
    first = store.unpack(demo, "demo")
    marker = first.layers[0].path / "conformance-marker"
    marker.write_text("kept")
    assert store.unpack(demo, "demo") == first
    assert marker.read_text() == "kept"  # not unpacked again


def test_graph_driver_data_lists_lower_dirs_top_first(demo: Layout, store: Store) -> None:
    image = store.unpack(demo, "demo")
    container = store.create_container(image, "web")
    data = container.data.to_json()["Data"]
    assert isinstance(data, dict)
    assert data["LowerDir"].split(":") == [str(layer.path) for layer in reversed(image.layers)]
    assert {Path(str(data[k])).name for k in ("UpperDir", "WorkDir", "MergedDir")} == {"upper", "work", "merged"}
    assert store.container("web") == container


def test_mounted_container_is_the_image_applied_to_an_empty_dir(demo: Layout, store: Store, scratch: Path) -> None:
    """manifest.md: the filesystem is the layers applied in order; the overlay of the diffs must show the same."""
    expected = scratch / "applied"
    expected.mkdir()
    apply_image(demo, "demo", expected)
    container = store.create_container(store.unpack(demo, "demo"), "web")
    merged = store.mount(container)
    try:
        assert _tree(merged) == _tree(expected)
        assert (merged / "etc").stat().st_mode == (expected / "etc").stat().st_mode
    finally:
        store.umount(container)


def test_whiteouts_as_files_fault_leaves_wh_files_that_overlay_shows(demo: Layout, scratch: Path) -> None:
    store = Store(scratch / "conformance-faulty", faults=frozenset({"whiteouts-as-files"}))
    try:
        container = store.create_container(store.unpack(demo, "demo"), "web")
        merged = store.mount(container)
        assert (merged / "etc" / ".wh.motd").exists() and (merged / "etc" / "motd").exists()
    finally:
        store.remove()


def test_container_writes_land_in_upper_as_copy_ups_and_whiteouts(demo: Layout, store: Store) -> None:
    container = store.create_container(store.unpack(demo, "demo"), "web")
    change_container(store.mount(container))
    store.umount(container)
    upper = container.upper
    assert (upper / "app" / "config.yaml").read_text() == "port: 9090\n"
    gone = (upper / "app" / "static" / "index.html").lstat()
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0


def test_remove_unmounts_and_deletes_even_when_the_body_fails(demo: Layout) -> None:
    with scratch_dir() as scratch:
        root = scratch / "conformance-store"
        with pytest.raises(RuntimeError, match="test body failed"), store_in(scratch) as store:
            store.mount(store.create_container(store.unpack(demo, "demo"), "web"))
            assert store.mounts()
            raise RuntimeError("test body failed")
        assert not root.exists()
        with open("/proc/self/mountinfo", encoding="utf-8") as info:
            assert str(root) not in info.read()


def test_store_names_are_checked(scratch: Path) -> None:
    with pytest.raises(StoreError, match="conformance-"):
        Store(scratch / "store")
    store = Store(scratch / "conformance-names")
    with pytest.raises(StoreError, match="container name"):
        store.container("../etc")
    store.remove()
