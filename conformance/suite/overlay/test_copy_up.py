"""OVL-COPYUP-*: when a lower object is copied to the upper dir, and what the copy keeps."""

from __future__ import annotations

import pytest

from conformance.scenarios import overlay
from conformance.scenarios.overlay import Entry, op
from conformance.suite.overlay import errno_of, mounted, names_under, pick, value_of
from conformance.target import Target


@pytest.mark.clause("OVL-COPYUP-001")
def test_write_copies_data_up_first(target: Target) -> None:
    """Lower f holds "abc"; append "def": upper/f and merged read MUST be "abcdef"."""
    seen = target.observe(overlay.run([[{"name": "f", "content": "abc"}]],
                                      [op("append", "f", content="def"), op("read", "f")]))
    mounted(target, seen)
    target.expect("append errno", None, errno_of(seen, 0))
    target.expect("upper/f content", "abcdef", (seen["upper"].get("f") or {}).get("content"),
                  hint="the lower data is copied up before the write")
    target.expect("read f", "abcdef", value_of(seen, 1))


@pytest.mark.clause("OVL-COPYUP-002")
def test_copy_up_keeps_mode(target: Target) -> None:
    """Lower f is 0640 and g 0755; append to both: upper/f MUST be 0640 and upper/g 0755."""
    lower = [{"name": "f", "content": "f", "mode": 0o640}, {"name": "g", "content": "g", "mode": 0o755}]
    seen = target.observe(overlay.run([lower], [op("append", "f", content="+"), op("append", "g", content="+")]))
    mounted(target, seen)
    target.expect("upper modes", {"f": 0o640, "g": 0o755},
                  {name: (seen["upper"].get(name) or {}).get("mode") for name in ("f", "g")})


@pytest.mark.clause("OVL-COPYUP-003")
def test_copy_up_keeps_owner(target: Target) -> None:
    """Lower f is owned by 1000:1001; append: upper/f MUST be owned by 1000:1001."""
    seen = target.observe(overlay.run([[{"name": "f", "content": "f", "uid": 1000, "gid": 1001}]],
                                      [op("append", "f", content="+")]))
    mounted(target, seen)
    target.expect("upper/f owner", {"uid": 1000, "gid": 1001}, pick(seen["upper"].get("f"), "uid", "gid"))


@pytest.mark.clause("OVL-COPYUP-004")
def test_copy_up_keeps_mtime(target: Target) -> None:
    """Lower f has mtime 1.5e9; chmod it (data untouched): upper/f and merged/f MUST keep mtime 1.5e9."""
    seen = target.observe(overlay.run([[{"name": "f", "content": "f", "mtime": 1_500_000_000}]],
                                      [op("chmod", "f", mode=0o600)]))
    mounted(target, seen)
    target.expect("chmod errno", None, errno_of(seen, 0))
    target.expect("upper/f mtime", 1_500_000_000, (seen["upper"].get("f") or {}).get("mtime"))
    target.expect("merged/f mtime", 1_500_000_000, (seen["merged"].get("f") or {}).get("mtime"))


@pytest.mark.clause("OVL-COPYUP-005")
@pytest.mark.requires("tmpfs-user-xattr")
def test_copy_up_keeps_xattrs(target: Target) -> None:
    """Lower f carries user.colour=blue; chmod it: upper/f MUST carry user.colour=blue."""
    seen = target.observe(overlay.run([[{"name": "f", "content": "f", "xattrs": {"user.colour": "blue"}}]],
                                      [op("chmod", "f", mode=0o600)]))
    mounted(target, seen)
    xattrs = (seen["upper"].get("f") or {}).get("xattrs") or {}
    target.expect("upper/f user.colour", "blue", xattrs.get("user.colour"))


@pytest.mark.clause("OVL-COPYUP-006")
def test_copy_up_makes_parents_first(target: Target) -> None:
    """Lower a (0750, uid 5), a/b (0700, uid 6), a/b/f; append to a/b/f: upper a and a/b MUST keep those."""
    lower: list[Entry] = [{"name": "a", "type": "dir", "mode": 0o750, "uid": 5, "gid": 5},
                          {"name": "a/b", "type": "dir", "mode": 0o700, "uid": 6, "gid": 6},
                          {"name": "a/b/f", "content": "f"}]
    seen = target.observe(overlay.run([lower], [op("append", "a/b/f", content="+")]))
    mounted(target, seen)
    target.expect("append errno", None, errno_of(seen, 0))
    target.expect("upper names", ["a", "a/b", "a/b/f"], names_under(seen["upper"]))
    target.expect("upper/a", {"type": "dir", "mode": 0o750, "uid": 5},
                  pick(seen["upper"].get("a"), "type", "mode", "uid"))
    target.expect("upper/a/b", {"type": "dir", "mode": 0o700, "uid": 6},
                  pick(seen["upper"].get("a/b"), "type", "mode", "uid"))


@pytest.mark.clause("OVL-COPYUP-007")
def test_read_only_access_copies_nothing_up(target: Target) -> None:
    """Lower f, d/g and s -> f: read, stat, readdir, readlink and read through s: upper MUST stay empty."""
    lower = [{"name": "f", "content": "f"}, {"name": "d", "type": "dir"}, {"name": "d/g", "content": "g"},
             {"name": "s", "type": "symlink", "target": "f"}]
    ops = [op("read", "f"), op("stat", "f"), op("readdir", "d"), op("read", "d/g"), op("readlink", "s"),
           op("read", "s"), op("stat", "d")]
    seen = target.observe(overlay.run([lower], ops))
    mounted(target, seen)
    target.expect("errnos", [None] * len(ops), [errno_of(seen, i) for i in range(len(ops))])
    target.expect("upper names", [], names_under(seen["upper"]), hint="copy-up is for write access only")


@pytest.mark.clause("OVL-COPYUP-008")
def test_truncate_copies_up(target: Target) -> None:
    """Lower f holds "abcdef"; truncate to 3: upper/f and merged read MUST be "abc"."""
    seen = target.observe(overlay.run([[{"name": "f", "content": "abcdef"}]],
                                      [op("truncate", "f", size=3), op("read", "f")]))
    mounted(target, seen)
    target.expect("truncate errno", None, errno_of(seen, 0))
    target.expect("upper/f", {"type": "file", "content": "abc"}, pick(seen["upper"].get("f"), "type", "content"))
    target.expect("read f", "abc", value_of(seen, 1))


@pytest.mark.clause("OVL-COPYUP-009")
def test_metadata_change_copies_up(target: Target) -> None:
    """Lower f1, f2, f3; chmod f1 0600, chown f2 7:7, utimes f3 1.1e9: upper MUST hold each with its change."""
    lower = [{"name": name, "content": name, "mode": 0o644} for name in ("f1", "f2", "f3")]
    ops = [op("chmod", "f1", mode=0o600), op("chown", "f2", uid=7, gid=7), op("utimes", "f3", mtime=1_100_000_000)]
    seen = target.observe(overlay.run([lower], ops))
    mounted(target, seen)
    target.expect("errnos", [None] * 3, [errno_of(seen, i) for i in range(3)])
    upper = seen["upper"]
    target.expect("upper/f1 mode", 0o600, (upper.get("f1") or {}).get("mode"))
    target.expect("upper/f2 owner", {"uid": 7, "gid": 7}, pick(upper.get("f2"), "uid", "gid"))
    target.expect("upper/f3 mtime", 1_100_000_000, (upper.get("f3") or {}).get("mtime"))


@pytest.mark.clause("OVL-COPYUP-010")
def test_creating_in_lower_directory_copies_it_up(target: Target) -> None:
    """Lower d (0750, 3:3) holds a; create d/new: upper d MUST be 0750 3:3 with only new, readdir d MUST be a, new."""
    lower: list[Entry] = [{"name": "d", "type": "dir", "mode": 0o750, "uid": 3, "gid": 3},
                          {"name": "d/a", "content": "a"}]
    seen = target.observe(overlay.run([lower], [op("create", "d/new", content="n"), op("readdir", "d")]))
    mounted(target, seen)
    target.expect("create errno", None, errno_of(seen, 0))
    target.expect("upper/d", {"type": "dir", "mode": 0o750, "uid": 3, "gid": 3},
                  pick(seen["upper"].get("d"), "type", "mode", "uid", "gid"))
    target.expect("upper names", ["d", "d/new"], names_under(seen["upper"]), hint="children are not copied up")
    target.expect("readdir d", ["a", "new"], value_of(seen, 1))
