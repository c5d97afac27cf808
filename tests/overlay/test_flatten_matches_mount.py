"""The bridge property, generated: flattening OCI layers with the apply rules gives the same tree as the
kernel's overlay mount of the same layers unpacked into a store (ref.store: 0/0 whiteouts, opaque xattrs).

Random layer stacks over a small name space, with whiteouts (`.wh.x`), opaque markers and replaced
names; each example builds one image layout, applies it onto an empty directory (ref.image) and
mounts it read-only from the reference layer store (ref.store), then compares the two trees (type,
mode, owner, content, link target). Runs in-process: both sides are the reference code plus the kernel.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.probe.layer_checks import build_tar, read_tree
from conformance.ref.image import apply_image
from conformance.ref.layout import Layout
from conformance.ref.store import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlay needs root")

PATHS = ("a", "b", "d", "d/x", "d/y", "e", "e/z")


@st.composite
def oci_layer(draw: st.DrawFn, *, base: bool) -> list[dict[str, Any]]:
    """One OCI layer's entries: files, dirs, symlinks; above the base also whiteouts and opaque markers."""
    entries: list[dict[str, Any]] = []
    placed: dict[str, str] = {}
    for path in sorted(draw(st.lists(st.sampled_from(PATHS), unique=True, max_size=5)),
                       key=lambda p: (p.count("/"), p)):
        parent, _, leaf = path.rpartition("/")
        if parent and placed.get(parent, "dir") != "dir":
            continue
        if parent and parent not in placed:
            entries.append({"name": parent, "type": "dir"})
            placed[parent] = "dir"
        kinds = ["file", "dir", "symlink"] + ([] if base else ["whiteout"] + (["opaque"] if path in ("d", "e") else []))
        kind = draw(st.sampled_from(kinds))
        if kind == "whiteout":
            entries.append({"name": f"{parent}/.wh.{leaf}" if parent else f".wh.{leaf}", "type": "file"})
            continue
        if kind == "opaque":
            entries += [{"name": path, "type": "dir"}, {"name": f"{path}/.wh..wh..opq", "type": "file"}]
            placed[path] = "dir"
            continue
        placed[path] = kind
        if kind == "file":
            entries.append({"name": path, "type": "file", "content": draw(st.sampled_from(["1", "22", "hello"])),
                            "mode": draw(st.sampled_from([0o644, 0o600, 0o755]))})
        elif kind == "dir":
            entries.append({"name": path, "type": "dir", "mode": draw(st.sampled_from([0o755, 0o700]))})
        else:
            entries.append({"name": path, "type": "symlink", "target": draw(st.sampled_from(["a", "d", "gone"]))})
    return entries


def _shape(tree: dict[str, Any]) -> dict[str, Any]:
    return {name: {key: node.get(key) for key in ("type", "mode", "uid", "gid", "content", "target")}
            for name, node in tree.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stack=st.integers(min_value=1, max_value=4).flatmap(
    lambda n: st.tuples(*[oci_layer(base=i == 0) for i in range(n)])))
def test_flattened_layers_equal_the_overlay_mount_of_them(stack: tuple[list[dict[str, Any]], ...]) -> None:
    """apply(layers) onto an empty directory MUST give the tree the overlay mount of the layers shows."""
    scratch = Path(tempfile.mkdtemp(prefix="conformance-flatten-", dir="/dev/shm"))
    store = Store(scratch / "conformance-store")
    try:
        layout = Layout.create(scratch / "layout")
        layout.add_image("t", [layout.add_layer(build_tar(entries)) for entries in stack])
        (scratch / "flat").mkdir()
        apply_image(layout, "t", scratch / "flat")
        container = store.create_container(store.unpack(layout, "t"), "flatten")
        merged = store.mount(container)
        try:
            mounted = read_tree(str(merged))
        finally:
            store.umount(container)
        assert _shape(mounted) == _shape(read_tree(str(scratch / "flat")))
    finally:
        store.remove()
        shutil.rmtree(scratch, ignore_errors=True)
