"""The reference overlayfs model: what the kernel's overlay mount would show, predicted without mounting.

`simulate(params)` takes an "overlay.run" scenario (conformance/scenarios/overlay.py: lowers top first,
upper, options, ops) and returns the same observation the kernel executor reads from a real mount: the
mount error, each op's errno and value, the merged tree and the upper tree with its overlay xattrs.
The rules, each with the section of Documentation/filesystems/overlayfs.rst it comes from, live in
ovloptions (mount options), ovltree (layers, lookup, readdir) and ovlops (operations, copy-up,
whiteouts, redirects). Checked against 6.18 on tmpfs layers; where 6.18 wrote more than the doc says
(origin, impure, shared whiteouts) ovlops' docstring lists it.

Known limits: index=on is modelled for hard links only (aliases share the copied-up inode, st_nlink from
the lower count, "overlay.nlink" as "U+<delta>"), not for directories or nfs_export; redirects are
followed from the upper layer only; data-only layers are modelled for reads and copy-up of the metacopy
files that point into them (ovltree.link_data); verity, xwhiteouts and nesting are out.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from conformance.ref.ovlmount import Mount
from conformance.ref.ovlops import run, stat_value
from conformance.ref.ovloptions import MountRefused, resolve
from conformance.ref.ovltree import Errno, View, build_layer, join, link_data, nlink

#: behaviour name -> what the deliberately faulty model does wrong (the `faults` keyword of simulate).
FAULTS: dict[str, str] = {
    "no-whiteout-on-unlink": "removing a lower file leaves no whiteout, so the lower file shows again",
    "readdir-shows-whiteouts": "readdir of a merged directory lists the names of whiteouts",
    "copy-up-loses-mode": "copy-up gives the upper copy the default mode instead of the lower one's",
    "copy-up-loses-owner": "copy-up gives the upper copy uid and gid 0 instead of the lower owner",
    "copy-up-loses-xattrs": "copy-up drops the lower object's user.* xattrs",
    "copy-up-loses-mtime": "copy-up stamps the upper copy with the current time instead of the lower mtime",
    "mkdir-without-opaque": "mkdir over a whiteout makes a plain directory, so the lower one merges again",
    "rename-dir-without-redirect": "a lower directory rename succeeds with redirect_dir off, without a redirect",
    "no-copy-up-on-write": "a write changes the lower file: it shows in merged but upper stays without the file",
    "lowers-bottom-first": "the lower layers are stacked bottom first (lowerdir read right to left)",
    "opaque-ignored": "an opaque directory still merges with the lower directories of its name",
    "whiteout-ignored": "a whiteout does not hide the lower name",
    "lower-shadows-upper": "a lower non-directory hides the upper one of the same name",
    "rmdir-ignores-lower-children": "rmdir of a merged directory checks only the upper entries for emptiness",
    "hardlinks-kept-without-index": "copy-up keeps lower hard links together although index is off",
    "metacopy-copies-data": "a metadata-only copy-up copies the data too and writes no metacopy xattr",
    "accept-bad-options": "conflicting or unknown mount options are accepted",
    "readdir-duplicates": "readdir lists a name once per layer that has it",
    "truncate-without-copy-up": "truncate changes the lower file instead of copying it up",
    "unlink-leaves-upper-file": "unlink of an upper-only file succeeds but leaves the file",
    "whiteout-only-for-lower-entries": "unlink of a copied-up file removes it but leaves no whiteout for the lower one",
    "copy-up-keeps-opaque": "copy-up of a directory that is opaque in a lower layer copies overlay.opaque=y",
    "readdir-stale-after-change": "each directory's readdir repeats its first listing, ignoring later changes",
    "copy-up-on-read": "read, stat, readdir and readlink of a lower object copy it (and its parents) up",
    "no-copy-up-on-metadata-change": "chmod, chown and utimes change the lower file in place, not a copy in upper",
    "metacopy-kept-after-write": "a write to a metadata-only copy keeps overlay.metacopy and copies no lower data",
    "metacopy-when-off": "chmod makes a metadata-only copy (overlay.metacopy, no data) also with metacopy=off",
    "link-without-copy-up": "link(lower a, b) makes b a separate copy of a in upper and leaves a in the lower layer",
    "index-ignored": "copy-up breaks lower hard links also with index=on",
    "rename-dir-always-exdev": "rename of any directory fails with EXDEV, pure upper ones included",
    "no-whiteout-on-rename": "rename of a lower non-directory leaves no whiteout at the old name",
    "redirect-followed-with-nofollow": "an overlay.redirect is followed whatever redirect_dir says, nofollow too",
    "data-only-merged": "data-only lower layers are merged like regular ones, so their names show",
    "metacopy-redirect-ignored": "a lower metacopy file reads as its own (sparse) bytes, not its redirect's data",
}


def simulate(params: Mapping[str, Any], *, defaults: Mapping[str, str] | None = None,
             faults: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The observation of one "overlay.run" scenario; defaults are /sys/module/overlay/parameters."""
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown overlay model faults {unknown}; known: {', '.join(sorted(FAULTS))}")
    try:
        config = resolve(dict(params.get("options") or {}), dict(defaults or {}),
                         accept_bad="accept-bad-options" in faults)
    except MountRefused as refused:
        return {"mount_error": refused.errno, "results": [], "merged": {}, "upper": {}}
    lowers = [build_layer(entries) for entries in params.get("lowers") or []]
    data_only = [build_layer(entries) for entries in params.get("data_lowers") or []]
    if data_only and not lowers and "accept-bad-options" not in faults:
        # fs/overlayfs/params.c: "::" needs a regular lower layer on its left ("lowerdir=::data" is EINVAL)
        return {"mount_error": "EINVAL", "results": [], "merged": {}, "upper": {}}
    if "data-only-merged" in faults or not lowers:
        lowers, data_only = lowers + data_only, []
    if "lowers-bottom-first" in faults:
        lowers.reverse()
    honoured = config.metacopy or data_only  # lower metacopy files: with metacopy=on or data-only layers
    if honoured and "metacopy-redirect-ignored" not in faults:
        link_data(lowers, data_only)
    upper = build_layer(params.get("upper") or [])
    follow = config.redirect_follow or "redirect-followed-with-nofollow" in faults
    view = View(upper, lowers, follow_redirects=follow, faults=faults)
    mount = Mount(view, config, now=int(time.time()), faults=faults)
    results: list[dict[str, Any]] = []
    for op in params.get("ops") or []:
        try:
            results.append({"errno": None, "value": run(mount, op)})
        except Errno as failed:
            results.append({"errno": failed.name, "value": None})
    return {"mount_error": None, "results": results, "merged": merged_tree(mount), "upper": upper_tree(mount)}


def merged_tree(mount: Mount) -> dict[str, Any]:
    """Every name a lookup finds under the merged root, path -> node (lstat, no xattrs)."""
    tree: dict[str, Any] = {}
    todo = [mount.view.root()]
    while todo:
        folder = todo.pop()
        # The names readdir lists, as os.walk sees them: a directory that is not merged lists its
        # whiteouts too, and lstat of such a name fails (the executors record it as unreachable).
        for name in mount.view.readdir(folder):
            try:
                found = mount.view.child(folder, name)
            except Errno as failed:
                tree[join(folder.path, name)] = {"type": "unreachable", "errno": failed.name}
                continue
            if found is None:
                tree[join(folder.path, name)] = {"type": "unreachable", "errno": "ENOENT"}
                continue
            node = mount.view.inode(found)
            if node.lost_data:  # the executors cannot open it to read its content
                tree[found.path] = {"type": "unreachable", "errno": "ENOENT"}
                continue
            shown: dict[str, Any] = {"type": node.kind, "mode": node.mode & 0o7777, "uid": node.uid, "gid": node.gid}
            if node.kind == "file":
                shown["content"] = node.data.content if node.data is not None else node.content
            elif node.kind == "symlink":
                shown["target"] = node.target
            elif node.kind == "chardev":
                shown["rdev"] = list(node.rdev)
            if node.kind != "dir":
                shown["nlink"] = stat_value(mount, found)["nlink"]
            shown["mtime"] = node.mtime
            tree[found.path] = shown
            if node.kind == "dir":
                todo.append(found)
    return dict(sorted(tree.items()))


def upper_tree(mount: Mount) -> dict[str, Any]:
    """The upper directory after the unmount, path -> node, with the overlay and user.* xattrs."""
    tree: dict[str, Any] = {}
    for path, node in mount.upper.items():
        if not path:
            continue
        shown: dict[str, Any] = {"type": node.kind, "mode": node.mode & 0o7777, "uid": node.uid, "gid": node.gid}
        if node.kind == "file":
            shown["content"] = node.content
        elif node.kind == "symlink":
            shown["target"] = node.target
        elif node.kind == "chardev":
            shown["rdev"] = list(node.rdev)
        if node.kind != "dir":
            shown["nlink"] = nlink(mount.upper, path)
        shown["mtime"] = node.mtime
        xattrs = {k: v for k, v in node.xattrs.items() if k.startswith(("overlay.", "user."))}
        if node.ovl_nlink:  # index=on: overlay's count as a delta from the upper inode's (fs/overlayfs/util.c)
            xattrs["overlay.nlink"] = f"U{node.ovl_nlink - nlink(mount.upper, path):+d}"
        shown["xattrs"] = dict(sorted(xattrs.items()))
        tree[path] = shown
    return dict(sorted(tree.items()))


__all__ = ["FAULTS", "simulate"]
