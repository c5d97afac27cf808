"""The reference overlayfs model (conformance/ref/overlay.py): its rules, its mount option checks, its faults.

Expected observations are written by hand from overlayfs.rst and from what 6.18 did on tmpfs layers, not
taken from the model. Where we are root and overlay is there, differential tests mount the kernel's
overlay on a private tmpfs with the same trees and compare (times aside).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from conformance.probe.overlay_trees import build_layer, read_tree
from conformance.ref.overlay import FAULTS, simulate

DEFAULTS = {"redirect_dir": "N", "metacopy": "N", "index": "N", "xino_auto": "N", "redirect_always_follow": "Y"}


def sim(lowers: list[list[dict[str, Any]]], ops: list[dict[str, Any]] | None = None, *,
        upper: list[dict[str, Any]] | None = None, options: dict[str, Any] | None = None,
        faults: frozenset[str] = frozenset()) -> dict[str, Any]:
    return simulate({"lowers": lowers, "upper": upper or [], "options": options or {}, "ops": ops or []},
                    defaults=DEFAULTS, faults=faults)


def f(name: str, content: str = "", **attrs: Any) -> dict[str, Any]:
    return {"name": name, "type": "file", "content": content, **attrs}


def d(name: str, **attrs: Any) -> dict[str, Any]:
    return {"name": name, "type": "dir", **attrs}


def wh(name: str) -> dict[str, Any]:
    return {"name": name, "type": "whiteout"}


def op(kind: str, path: str, /, **args: Any) -> dict[str, Any]:
    return {"op": kind, "path": path, **args}


def errnos(obs: dict[str, Any]) -> list[str | None]:
    return [r["errno"] for r in obs["results"]]


def values(obs: dict[str, Any]) -> list[Any]:
    return [r["value"] for r in obs["results"]]


WHITEOUT = {"type": "chardev", "mode": 0, "uid": 0, "gid": 0, "rdev": [0, 0]}


def without_mtime(tree: dict[str, Any]) -> dict[str, Any]:
    return {p: {k: v for k, v in n.items() if k != "mtime"} for p, n in tree.items()}


# --- mount options (overlayfs.rst § Metadata only copy up, § renaming directories; params.c) ---------

@pytest.mark.parametrize(("options", "error"), [
    ({"userxattr": True, "redirect_dir": "on"}, "EINVAL"),
    ({"userxattr": True, "redirect_dir": "follow"}, "EINVAL"),
    ({"userxattr": True, "redirect_dir": "off"}, "EINVAL"),  # off means follow: redirect_always_follow=Y
    ({"userxattr": True, "redirect_dir": "nofollow"}, None),
    ({"userxattr": True, "metacopy": "on"}, "EINVAL"),
    ({"metacopy": "on", "redirect_dir": "off"}, "EINVAL"),
    ({"metacopy": "on", "redirect_dir": "nofollow"}, "EINVAL"),
    ({"metacopy": "on"}, None),
    ({"index": "on", "metacopy": "on"}, None),
    ({"redirect_dir": "bogus"}, "EINVAL"),
    ({"bogus": "1"}, "EINVAL"),
    ({"xino": "on"}, None),
    ({"userxattr": True}, None),
])
def test_mount_options_are_checked_like_the_kernel(options: dict[str, Any], error: str | None) -> None:
    """Conflicting or unknown options refuse the mount with EINVAL; the others mount."""
    assert sim([[f("a")]], options=options)["mount_error"] == error


def test_redirect_dir_off_with_userxattr_mounts_when_off_means_nofollow() -> None:
    """With redirect_always_follow=N, "off" is "nofollow", which userxattr accepts."""
    obs = simulate({"lowers": [[]], "upper": [], "options": {"userxattr": True, "redirect_dir": "off"}, "ops": []},
                   defaults={**DEFAULTS, "redirect_always_follow": "N"})
    assert obs["mount_error"] is None


def test_metacopy_alone_turns_redirects_on() -> None:
    """metacopy=on without redirect_dir: a lower directory rename gets a redirect, not EXDEV."""
    obs = sim([[d("d")]], [op("rename", "d", to="e")], options={"metacopy": "on"})
    assert errnos(obs) == [None]
    assert obs["upper"]["e"]["xattrs"] == {"overlay.origin": "*", "overlay.redirect": "d"}


# --- lookup and merge (§ Directories, § whiteouts and opaque directories, § Multiple lower layers) ---

def test_upper_non_directory_hides_lower() -> None:
    """A name that is a file in upper and a directory below is the upper file only."""
    obs = sim([[d("x"), f("x/in", "i")]], [op("read", "x"), op("stat", "x/in")], upper=[f("x", "up")])
    assert values(obs)[0] == "up"
    assert errnos(obs) == [None, "ENOTDIR"]
    assert set(obs["merged"]) == {"x"}


def test_whiteout_hides_lower_file() -> None:
    """Upper has a whiteout over lower a; stat and readdir of / MUST NOT see it."""
    obs = sim([[f("a", "1"), f("b", "2")]], [op("stat", "a"), op("readdir", "")], upper=[wh("a")])
    assert errnos(obs) == ["ENOENT", None]
    assert values(obs)[1] == ["b"]


def test_opaque_dir_hides_lower_dir() -> None:
    """An opaque upper directory shows only its own entries."""
    obs = sim([[d("d"), f("d/low")]], [op("readdir", "d")], upper=[d("d", opaque=True), f("d/up")])
    assert values(obs) == [["up"]]


def test_directories_merge_across_layers_top_first() -> None:
    """Lowers are given top first: the top one's file wins, names of all layers are listed once."""
    lowers = [[d("d"), f("d/x", "top")], [d("d"), f("d/x", "mid"), f("d/y", "mid")], [d("d"), f("d/z", "bot")]]
    obs = sim(lowers, [op("readdir", "d"), op("read", "d/x"), op("stat", "d")])
    assert values(obs)[:2] == [["x", "y", "z"], "top"]
    assert values(obs)[2]["nlink"] == 1  # a merged directory reports 1 (fs/overlayfs/inode.c)


def test_whiteout_in_middle_lower_hides_the_bottom() -> None:
    """A whiteout in a lower layer hides the name in the layers below it."""
    obs = sim([[d("d"), wh("d/x")], [d("d"), f("d/x"), f("d/y")]], [op("readdir", "d"), op("read", "d/x")])
    assert values(obs)[0] == ["y"]
    assert errnos(obs)[1] == "ENOENT"


def test_readdir_of_a_non_merged_dir_lists_whiteouts() -> None:
    """§ readdir: a directory that is not merged is read from the real one: its whiteout is listed (6.18)."""
    obs = sim([[d("s"), wh("s/w"), f("s/k")]], [op("readdir", "s"), op("stat", "s/w")])
    assert values(obs)[0] == ["k", "w"]
    assert errnos(obs)[1] == "ENOENT"
    assert obs["merged"]["s/w"] == {"type": "unreachable", "errno": "ENOENT"}  # listed, but lstat fails


# --- copy-up (§ Non-directories) ---------------------------------------------------------------------

def test_append_copies_up_file_and_parent_with_attributes() -> None:
    """The upper copy keeps mode, owner, user xattrs; the parent is copied up with its own attributes."""
    lower = [d("d", mode=0o700, uid=7, gid=8, mtime=2000),
             f("d/f", "abc", mode=0o640, uid=5, gid=6, mtime=1000, xattrs={"user.k": "v"})]
    obs = sim([lower], [op("append", "d/f", content="Z"), op("read", "d/f")])
    assert values(obs) == [None, "abcZ"]
    up = without_mtime(obs["upper"])
    assert up["d"] == {"type": "dir", "mode": 0o700, "uid": 7, "gid": 8,
                       "xattrs": {"overlay.impure": "y", "overlay.origin": "*"}}
    assert up["d/f"] == {"type": "file", "mode": 0o640, "uid": 5, "gid": 6, "content": "abcZ", "nlink": 1,
                         "xattrs": {"overlay.origin": "*", "user.k": "v"}}
    assert obs["upper"]["d"]["mtime"] == 2000  # copy-up into d restores d's times


def test_chmod_keeps_lower_mtime() -> None:
    """A metadata change copies up with the lower mtime."""
    obs = sim([[f("a", "x", mtime=1234)]], [op("chmod", "a", mode=0o600)])
    assert obs["upper"]["a"]["mtime"] == 1234
    assert obs["upper"]["a"]["mode"] == 0o600


def test_read_and_stat_never_copy_up() -> None:
    obs = sim([[d("d"), f("d/a", "x")]], [op("read", "d/a"), op("stat", "d/a"), op("readdir", "d")])
    assert obs["upper"] == {}


def test_truncate_copies_up() -> None:
    obs = sim([[f("a", "hello")]], [op("truncate", "a", size=2)])
    assert obs["upper"]["a"]["content"] == "he"


def test_metacopy_chmod_writes_a_sparse_upper_with_metacopy_xattr() -> None:
    """§ Metadata only copy up: the upper holds no data (zeros of the lower size on tmpfs), then a write
    copies the data and removes the xattr."""
    obs = sim([[f("a", "abc"), f("b", "xyz")]], [op("chmod", "a", mode=0o600), op("read", "a"),
                                                 op("chmod", "b", mode=0o600), op("append", "b", content="!")],
              options={"metacopy": "on"})
    assert values(obs)[1] == "abc"
    assert obs["upper"]["a"]["content"] == "\0\0\0"
    assert obs["upper"]["a"]["xattrs"] == {"overlay.metacopy": "", "overlay.origin": "*"}
    assert obs["merged"]["a"]["content"] == "abc"
    assert obs["upper"]["b"]["content"] == "xyz!"
    assert obs["upper"]["b"]["xattrs"] == {"overlay.origin": "*"}


# --- whiteouts, opaque dirs, rmdir ------------------------------------------------------------------

def test_unlink_lower_file_leaves_shared_whiteouts() -> None:
    """Unlink of lower files: 0/0 whiteouts in upper, links of one whiteout kept in the work dir (nlink n+1)."""
    obs = sim([[f("a"), f("b")]], [op("unlink", "a"), op("unlink", "b")])
    assert without_mtime(obs["upper"]) == {"a": {**WHITEOUT, "nlink": 3, "xattrs": {}},
                                           "b": {**WHITEOUT, "nlink": 3, "xattrs": {}}}
    assert obs["merged"] == {}


def test_unlink_upper_only_file_leaves_nothing() -> None:
    obs = sim([[]], [op("create", "n", content="x"), op("unlink", "n")])
    assert obs["upper"] == {} and obs["merged"] == {}


def test_rmdir_merged_dir_with_entries_is_enotempty_then_whiteout() -> None:
    obs = sim([[d("e"), f("e/x"), d("empty")]], [op("rmdir", "e"), op("rmdir", "empty"), op("rmdir", "")])
    assert errnos(obs) == ["ENOTEMPTY", None, "EBUSY"]
    assert without_mtime(obs["upper"]) == {"empty": {**WHITEOUT, "nlink": 2, "xattrs": {}}}


def test_mkdir_over_whiteout_is_opaque() -> None:
    obs = sim([[d("e"), f("e/x")]], [op("unlink", "e/x"), op("rmdir", "e"), op("mkdir", "e", mode=0o755),
                                     op("readdir", "e")])
    assert errnos(obs) == [None, None, None, None]
    assert values(obs)[3] == []
    assert obs["upper"]["e"]["xattrs"] == {"overlay.opaque": "y"}


def test_create_over_whiteout_replaces_it() -> None:
    obs = sim([[f("a", "old")]], [op("unlink", "a"), op("create", "a", content="new", mode=0o600)])
    assert without_mtime(obs["upper"]) == {"a": {"type": "file", "mode": 0o600, "uid": 0, "gid": 0,
                                                 "content": "new", "nlink": 1, "xattrs": {}}}


# --- rename, redirect, links --------------------------------------------------------------------------

def test_rename_lower_file_copies_up_and_whites_out_source() -> None:
    obs = sim([[f("h", "h2")]], [op("rename", "h", to="k")])
    assert without_mtime(obs["upper"]) == {
        "h": {**WHITEOUT, "nlink": 1, "xattrs": {}},
        "k": {"type": "file", "mode": 0o644, "uid": 0, "gid": 0, "content": "h2", "nlink": 1,
              "xattrs": {"overlay.origin": "*"}}}


def test_rename_lower_dir_without_redirect_dir_is_exdev() -> None:
    obs = sim([[d("d"), f("d/f")]], [op("rename", "d", to="d2")])
    assert errnos(obs) == ["EXDEV"]
    assert obs["upper"] == {}


def test_rename_lower_dir_with_redirect_dir_writes_redirects() -> None:
    """§ renaming directories: relative redirect in the same parent, absolute across parents."""
    lower = [d("d"), f("d/f"), d("e"), d("e/x"), d("n")]
    obs = sim([lower], [op("rename", "d", to="d2"), op("rename", "e", to="n/e"), op("readdir", "d2"),
                        op("readdir", "n/e"), op("readdir", "")], options={"redirect_dir": "on"})
    assert values(obs)[2:] == [["f"], ["x"], ["d2", "n"]]
    up = obs["upper"]
    assert up["d2"]["xattrs"] == {"overlay.origin": "*", "overlay.redirect": "d"}
    assert up["n/e"]["xattrs"] == {"overlay.origin": "*", "overlay.redirect": "/e"}
    assert up["n"]["xattrs"] == {"overlay.impure": "y", "overlay.origin": "*"}
    assert up["d"]["nlink"] == 1 and up["e"]["nlink"] == 1  # RENAME_WHITEOUT: fresh whiteouts


def test_pure_upper_dir_renamed_into_merged_dir_becomes_opaque() -> None:
    obs = sim([[d("x")]], [op("mkdir", "nd", mode=0o755), op("rename", "nd", to="nd3")])
    assert obs["upper"]["nd3"]["xattrs"] == {"overlay.opaque": "y"}


def test_link_of_lower_hardlink_breaks_it_without_index() -> None:
    """§ index: with index off, copy-up of one name of a lower hard link separates it from the others."""
    lower = [f("a", "aaa"), {"name": "a2", "type": "hardlink", "target": "a"}]
    obs = sim([lower], [op("link", "a", to="b"), op("stat", "a"), op("stat", "a2"), op("write", "a", content="new"),
                        op("read", "a2")])
    assert [v["nlink"] for v in values(obs)[1:3]] == [2, 2]
    assert values(obs)[4] == "aaa"
    assert obs["upper"]["a"]["xattrs"] == {}  # no origin when a lower hard link is broken


def test_link_of_lower_hardlink_is_kept_with_index() -> None:
    """index=on (partial model): all names show the copied-up inode, nlink counts every name."""
    lower = [f("a", "aaa"), {"name": "a2", "type": "hardlink", "target": "a"}]
    obs = sim([lower], [op("link", "a", to="b"), op("stat", "a2"), op("write", "a", content="new"),
                        op("read", "a2")], options={"index": "on"})
    assert values(obs)[1]["nlink"] == 3
    assert values(obs)[3] == "new"
    assert obs["upper"]["a"]["xattrs"] == {"overlay.nlink": "U+0", "overlay.origin": "*"}
    assert obs["upper"]["a"]["nlink"] == 3


def test_symlink_and_fifo_are_pure_upper() -> None:
    obs = sim([[d("e")]], [op("symlink", "e/s", target="tgt"), op("mknod", "e/p", kind="fifo", mode=0o640),
                           op("readlink", "e/s")])
    assert values(obs)[2] == "tgt"
    assert obs["upper"]["e/s"]["xattrs"] == {} and obs["upper"]["e/p"]["type"] == "fifo"
    assert obs["upper"]["e"]["xattrs"] == {"overlay.origin": "*"}  # no impure: nothing copied up into e


@pytest.mark.parametrize(("ops", "expected"), [
    ([op("create", "a")], "EEXIST"),
    ([op("mkdir", "d")], "EEXIST"),
    ([op("unlink", "d")], "EISDIR"),
    ([op("rmdir", "a")], "ENOTDIR"),
    ([op("link", "nope", to="x")], "ENOENT"),
    ([op("link", "d", to="x")], "EPERM"),
    ([op("read", "d")], "EISDIR"),
    ([op("readlink", "a")], "EINVAL"),
    ([op("truncate", "p", size=0)], "EINVAL"),
    ([op("setxattr", "p", name="user.a", value="1")], "EPERM"),
    ([op("rename", "d", to="d/in")], "EINVAL"),
    ([op("write", "nope", content="x")], "ENOENT"),
])
def test_errnos(ops: list[dict[str, Any]], expected: str) -> None:
    obs = sim([[f("a"), d("d"), f("d/x"), {"name": "p", "type": "fifo"}]], ops, options={"redirect_dir": "on"})
    assert errnos(obs) == [expected]


# --- faults: each one changes the observation of a scenario that shows it ---------------------------

LOW = [d("d", uid=3, mtime=10), f("d/f", "abc", mode=0o640, uid=5, gid=6, mtime=1000, xattrs={"user.k": "v"}),
       f("a", "aaa"), {"name": "a2", "type": "hardlink", "target": "a"}, d("e"), f("e/x", "x"), f("g")]
FAULT_SCENARIOS: dict[str, dict[str, Any]] = {
    "no-whiteout-on-unlink": {"ops": [op("unlink", "g")]},
    "readdir-shows-whiteouts": {"ops": [op("unlink", "g"), op("readdir", "")]},
    "copy-up-loses-mode": {"ops": [op("append", "d/f", content="!")]},
    "copy-up-loses-owner": {"ops": [op("append", "d/f", content="!")]},
    "copy-up-loses-xattrs": {"ops": [op("append", "d/f", content="!")]},
    "copy-up-loses-mtime": {"ops": [op("chmod", "d/f", mode=0o600)]},
    "mkdir-without-opaque": {"ops": [op("unlink", "e/x"), op("rmdir", "e"), op("mkdir", "e")]},
    "rename-dir-without-redirect": {"ops": [op("rename", "e", to="e2")]},
    "no-copy-up-on-write": {"ops": [op("write", "g", content="w")]},
    "lowers-bottom-first": {"lowers": [[f("g", "top")], [f("g", "bottom")]], "ops": [op("read", "g")]},
    "opaque-ignored": {"upper": [d("e", opaque=True)], "ops": [op("readdir", "e")]},
    "whiteout-ignored": {"upper": [wh("g")], "ops": [op("stat", "g")]},
    "lower-shadows-upper": {"upper": [f("g", "up")], "ops": [op("read", "g")]},
    "rmdir-ignores-lower-children": {"ops": [op("rmdir", "e")]},
    "hardlinks-kept-without-index": {"ops": [op("write", "a", content="n"), op("read", "a2")]},
    "metacopy-copies-data": {"options": {"metacopy": "on"}, "ops": [op("chmod", "a", mode=0o600)]},
    "accept-bad-options": {"options": {"userxattr": True, "metacopy": "on"}},
    "readdir-duplicates": {"lowers": [[d("e"), f("e/x")], [d("e"), f("e/x")]], "ops": [op("readdir", "e")]},
    "truncate-without-copy-up": {"ops": [op("truncate", "g", size=0)]},
    "unlink-leaves-upper-file": {"ops": [op("create", "n"), op("unlink", "n")]},
    "whiteout-only-for-lower-entries": {"ops": [op("append", "g", content="+"), op("unlink", "g")]},
    "copy-up-keeps-opaque": {"lowers": [[d("e", opaque=True)], [d("e"), f("e/x")]], "ops": [op("create", "e/n")]},
    "readdir-stale-after-change": {"ops": [op("readdir", "e"), op("create", "e/n"), op("readdir", "e")]},
    "copy-up-on-read": {"ops": [op("read", "e/x")]},
    "no-copy-up-on-metadata-change": {"ops": [op("chmod", "g", mode=0o600)]},
    "metacopy-kept-after-write": {"options": {"metacopy": "on"},
                                  "ops": [op("chmod", "d/f", mode=0o600), op("append", "d/f", content="+")]},
    "metacopy-when-off": {"options": {"metacopy": "off"}, "ops": [op("chmod", "d/f", mode=0o600)]},
    "link-without-copy-up": {"ops": [op("link", "g", to="h")]},
    "index-ignored": {"options": {"index": "on"}, "ops": [op("write", "a", content="n"), op("read", "a2")]},
    "rename-dir-always-exdev": {"ops": [op("mkdir", "n"), op("rename", "n", to="m")]},
    "no-whiteout-on-rename": {"ops": [op("rename", "g", to="h")]},
    "data-only-merged": {"data_lowers": [[f("blob", "b")]], "ops": [op("readdir", "")]},
    "metacopy-redirect-ignored": {"lowers": [[{"name": "m", "content": "\0\0", "xattrs": {
        "trusted.overlay.metacopy": "", "trusted.overlay.redirect": "/blob"}}]], "data_lowers": [[f("blob", "bb")]],
                                  "ops": [op("read", "m")]},
    "redirect-followed-with-nofollow": {"upper": [d("n", xattrs={"trusted.overlay.redirect": "/e"})],
                                        "options": {"redirect_dir": "nofollow"}, "ops": [op("readdir", "n")]},
}


def test_every_fault_has_a_scenario() -> None:
    assert sorted(FAULT_SCENARIOS) == sorted(FAULTS)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_changes_the_observation(fault: str) -> None:
    spec = FAULT_SCENARIOS[fault]
    params = {"lowers": spec.get("lowers", [LOW]), "upper": spec.get("upper", []),
              "options": spec.get("options", {}), "ops": spec.get("ops", []),
              "data_lowers": spec.get("data_lowers", [])}
    good = simulate(params, defaults=DEFAULTS)
    bad = simulate(params, defaults=DEFAULTS, faults=frozenset({fault}))
    assert good != bad


def test_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown overlay model faults"):
        simulate({"lowers": [[]]}, faults=frozenset({"nope"}))


# --- differential: the kernel's overlay on a private tmpfs ------------------------------------------

def _overlay_usable() -> str | None:
    if os.geteuid() != 0:
        return "mounting overlay needs root"
    with open("/proc/filesystems", encoding="utf-8") as handle:
        if "overlay" not in handle.read().split():
            return "overlay is not in /proc/filesystems"
    return None


@contextlib.contextmanager
def _scratch() -> Iterator[str]:
    base = tempfile.mkdtemp(prefix="conformance-ovlref-", dir="/dev/shm")
    mounted: list[str] = []
    try:
        subprocess.run(["mount", "-t", "tmpfs", "conformance-ovlref", base], check=True)
        mounted.append(base)
        yield base
    finally:
        for path in (os.path.join(base, "merged"), *mounted):
            subprocess.run(["umount", path], capture_output=True, check=False)
        os.rmdir(base)


def _node(path: str, *, xattrs: bool) -> dict[str, Any]:
    st = os.lstat(path)
    kinds = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
             stat.S_IFCHR: "chardev"}
    kind = kinds.get(stat.S_IFMT(st.st_mode), "other")
    node: dict[str, Any] = {"type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if kind == "file":
        with open(path, "rb") as handle:
            node["content"] = handle.read().decode(errors="replace")
    elif kind == "symlink":
        node["target"] = os.readlink(path)
    elif kind == "chardev":
        node["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    if kind != "dir":
        node["nlink"] = st.st_nlink
    if xattrs:
        found = {}
        for name in os.listxattr(path, follow_symlinks=False):
            key = "overlay." + name[len("trusted.overlay."):] if name.startswith("trusted.overlay.") else name
            if key.startswith(("overlay.", "user.")):
                value = os.getxattr(path, name, follow_symlinks=False).decode(errors="replace")
                found[key] = "*" if key == "overlay.origin" else value
        node["xattrs"] = dict(sorted(found.items()))
    return node


def _kernel_op(root: str, o: dict[str, Any]) -> Any:
    p = os.path.join(root, o["path"])
    kind = o["op"]
    if kind == "read":
        with open(p, "rb") as handle:
            return handle.read().decode()
    if kind == "stat":
        st = os.lstat(p)
        return {"type": _node(p, xattrs=False)["type"], "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                "gid": st.st_gid, "size": st.st_size, "nlink": st.st_nlink}
    if kind in ("create", "write", "append"):
        flags = {"create": os.O_CREAT | os.O_EXCL | os.O_WRONLY, "write": os.O_WRONLY | os.O_TRUNC,
                 "append": os.O_WRONLY | os.O_APPEND}[kind]
        fd = os.open(p, flags, o.get("mode", 0o644))
        try:
            os.write(fd, o.get("content", "").encode())
        finally:
            os.close(fd)
        return None
    simple = {
        "readdir": lambda: sorted(os.listdir(p)), "readlink": lambda: os.readlink(p),
        "truncate": lambda: os.truncate(p, o["size"]), "chmod": lambda: os.chmod(p, o["mode"]),
        "chown": lambda: os.chown(p, o.get("uid", -1), o.get("gid", -1)),
        "utimes": lambda: os.utime(p, (o["mtime"], o["mtime"])),
        "setxattr": lambda: os.setxattr(p, o["name"], o.get("value", "").encode()),
        "unlink": lambda: os.unlink(p), "rmdir": lambda: os.rmdir(p),
        "mkdir": lambda: os.mkdir(p, o.get("mode", 0o755)),
        "rename": lambda: os.rename(p, os.path.join(root, o["to"])),
        "link": lambda: os.link(p, os.path.join(root, o["to"]), follow_symlinks=False),
        "symlink": lambda: os.symlink(o["target"], p), "mknod": lambda: os.mkfifo(p, o.get("mode", 0o644)),
    }
    return simple[kind]()


def kernel_observe(params: dict[str, Any]) -> dict[str, Any]:
    """The same observation from a real overlay mount on a private tmpfs (unmounted on every path)."""
    old = os.umask(0)
    try:
        with _scratch() as base:
            lowers = []
            for n, entries in enumerate(params["lowers"]):
                lowers.append(os.path.join(base, f"lower{n}"))
                build_layer(lowers[-1], entries, userxattr=False)
            upper, work, merged = (os.path.join(base, x) for x in ("upper", "work", "merged"))
            build_layer(upper, params.get("upper", []), userxattr=False)
            os.mkdir(work)
            os.mkdir(merged)
            words = [k if v is True else f"{k}={v}" for k, v in params.get("options", {}).items() if v is not False]
            data = ",".join([f"lowerdir={':'.join(lowers)}", f"upperdir={upper}", f"workdir={work}", *words])
            done = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", data, merged], capture_output=True,
                                  check=False)
            if done.returncode:
                return {"mount_error": "EINVAL", "results": [], "merged": {}, "upper": {}}
            results = []
            try:
                for o in params.get("ops", []):
                    try:
                        results.append({"errno": None, "value": _kernel_op(merged, o)})
                    except OSError as exc:
                        results.append({"errno": errno.errorcode[exc.errno or 0], "value": None})
                merged_tree = read_tree(merged, xattrs=False)
            finally:
                subprocess.run(["umount", merged], check=True)
            return {"mount_error": None, "results": results, "merged": merged_tree,
                    "upper": read_tree(upper, xattrs=True)}
    finally:
        os.umask(old)


def _comparable(obs: dict[str, Any]) -> dict[str, Any]:
    return {**obs, "merged": without_mtime(obs["merged"]), "upper": without_mtime(obs["upper"])}


DIFFERENTIAL: dict[str, dict[str, Any]] = {
    "copy-up-unlink-rename": {"lowers": [LOW], "ops": [
        op("append", "d/f", content="Z"), op("unlink", "g"), op("unlink", "a2"), op("rename", "a", to="d/a"),
        op("rmdir", "e"), op("unlink", "e/x"), op("rmdir", "e"), op("mkdir", "e", mode=0o700), op("readdir", ""),
        op("stat", "d"), op("stat", "e")]},
    "redirect": {"lowers": [[d("d"), f("d/f"), d("d/sub"), d("n")]], "options": {"redirect_dir": "on"}, "ops": [
        op("rename", "d", to="d2"), op("rename", "d2/sub", to="d2/sub2"), op("rename", "d2", to="n/d3"),
        op("readdir", "n/d3")]},
    "exdev-and-errnos": {"lowers": [LOW], "ops": [
        op("rename", "d", to="x"), op("create", "a"), op("rmdir", ""), op("unlink", "d"), op("link", "d", to="q"),
        op("readlink", "g"), op("stat", "nope/x"), op("stat", "g/x")]},
    "metacopy": {"lowers": [LOW], "options": {"metacopy": "on"}, "ops": [
        op("chmod", "d/f", mode=0o600), op("chown", "a", uid=3, gid=3), op("read", "d/f"), op("stat", "a2"),
        op("utimes", "g", mtime=5), op("append", "g", content="!")]},
    "three-lowers": {"lowers": [[d("e"), wh("e/x"), f("e/y", "top")], [d("e", opaque=True), f("e/z")],
                                [d("e"), f("e/x"), f("e/w")]],
                     "upper": [d("o", opaque=True), wh("o/w"), f("o/v")],
                     "ops": [op("readdir", "e"), op("stat", "e"), op("readdir", "o"), op("unlink", "e/z"),
                             op("create", "e/z", content="Z"), op("rename", "e/y", to="o/y"), op("readdir", "e")]},
    "index": {"lowers": [LOW], "options": {"index": "on"}, "ops": [
        op("link", "a", to="b"), op("stat", "a2"), op("write", "a", content="new"), op("read", "a2"),
        op("unlink", "g")]},
    "symlinks": {"lowers": [[f("a", "A"), {"name": "s", "type": "symlink", "target": "a"}, d("d"),
                             {"name": "ds", "type": "symlink", "target": "d"}]],
                 "ops": [op("append", "s", content="!"), op("create", "ds/n", content="n"), op("readlink", "s"),
                         op("chmod", "s", mode=0o600), op("mknod", "d/p", kind="fifo", mode=0o600),
                         op("symlink", "d/l", target="../a"), op("read", "d/l")]},
}


@pytest.mark.parametrize("name", sorted(DIFFERENTIAL))
def test_model_matches_kernel(name: str) -> None:
    """The model's observation equals the kernel's for hand-picked scenarios (mtimes aside)."""
    reason = _overlay_usable()
    if reason:
        pytest.skip(reason)
    params = {"upper": [], "options": {}, **DIFFERENTIAL[name]}
    kernel = kernel_observe(params)
    model = simulate(params, defaults=DEFAULTS)
    assert _comparable(model) == _comparable(kernel)
