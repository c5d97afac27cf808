"""OVL-RENAME-*: rename of files and directories, EXDEV without redirect_dir, and the redirect xattr with it."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.scenarios import overlay
from conformance.scenarios.overlay import op
from conformance.suite.overlay import WHITEOUT, errno_of, mounted, names_under, overlay_xattr, pick, value_of
from conformance.target import Target

#: Lower a/d (with a/d/x) and an empty lower b: a directory to move to another parent.
_MOVABLE = [{"name": "a", "type": "dir"}, {"name": "a/d", "type": "dir"}, {"name": "a/d/x", "content": "x"},
            {"name": "b", "type": "dir"}]


@pytest.mark.clause("OVL-RENAME-001")
def test_lower_directory_rename_without_redirect_is_exdev(target: Target) -> None:
    """With redirect_dir off, follow and nofollow, rename a/d b/e MUST be EXDEV and change nothing."""
    modes = ("off", "follow", "nofollow")
    scenarios = [overlay.run([_MOVABLE], [op("rename", "a/d", to="b/e"), op("stat", "a/d/x")],
                             options={"redirect_dir": mode}) for mode in modes]
    for mode, observation in zip(modes, target.probe(*scenarios), strict=True):
        seen = observation.data
        mounted(target, seen)
        target.expect(f"redirect_dir={mode}: rename a/d b/e errno", "EXDEV", errno_of(seen, 0),
                      hint="redirects are not created in this mode (overlayfs.rst § renaming directories)")
        target.expect(f"redirect_dir={mode}: stat a/d/x errno", None, errno_of(seen, 1))
        target.expect(f"redirect_dir={mode}: upper names", [], names_under(seen["upper"]))


@pytest.mark.clause("OVL-RENAME-002")
@pytest.mark.requires("overlay-redirect-dir")
def test_redirect_dir_on_keeps_lower_children(target: Target) -> None:
    """With redirect_dir=on, rename a/d b/e: b/e MUST list x, upper b/e redirect to /a/d, upper a/d be a whiteout."""
    seen = target.observe(overlay.run([_MOVABLE], [op("rename", "a/d", to="b/e"), op("readdir", "b/e"),
                                                   op("read", "b/e/x"), op("stat", "a/d")],
                                      options={"redirect_dir": "on"}))
    mounted(target, seen, needs=("redirect_dir",))
    target.expect("rename a/d b/e errno", None, errno_of(seen, 0))
    target.expect("readdir b/e", ["x"], value_of(seen, 1), hint="the lower children follow the redirect")
    target.expect("read b/e/x", "x", value_of(seen, 2))
    target.expect("stat a/d errno", "ENOENT", errno_of(seen, 3))
    target.expect("upper/b/e overlay.redirect", "/a/d", overlay_xattr(seen["upper"].get("b/e"), "redirect"))
    target.expect("upper/a/d", WHITEOUT, pick(seen["upper"].get("a/d"), "type", "rdev"))
    target.expect("upper/b/e/x", None, seen["upper"].get("b/e/x"), hint="the directory is copied up, not its contents")


@pytest.mark.clause("OVL-RENAME-003")
def test_directory_made_in_upper_renames_freely(target: Target) -> None:
    """With redirect_dir=off, mkdir n, create n/f, rename n m: it MUST work, with no redirect and nothing at n."""
    ops = [op("mkdir", "n", mode=0o755), op("create", "n/f", content="f"), op("rename", "n", to="m"),
           op("readdir", "m")]
    seen = target.observe(overlay.run([[{"name": "other", "content": "o"}]], ops, options={"redirect_dir": "off"}))
    mounted(target, seen)
    target.expect("mkdir, create, rename errnos", [None] * 3, [errno_of(seen, i) for i in range(3)])
    target.expect("readdir m", ["f"], value_of(seen, 3))
    target.expect("upper/n", None, seen["upper"].get("n"), hint="nothing below n: no whiteout is needed there")
    target.expect("upper/m/f", {"type": "file", "content": "f"}, pick(seen["upper"].get("m/f"), "type", "content"))
    target.expect("upper/m overlay.redirect", None, overlay_xattr(seen["upper"].get("m"), "redirect"))


@pytest.mark.clause("OVL-RENAME-004")
def test_lower_file_rename_copies_up_and_whites_out(target: Target) -> None:
    """Lower a (0640, "x"); rename a b: upper b MUST be a 0640 file holding x and upper a a whiteout."""
    seen = target.observe(overlay.run([[{"name": "a", "content": "x", "mode": 0o640}]],
                                      [op("rename", "a", to="b"), op("stat", "a"), op("read", "b")]))
    mounted(target, seen)
    target.expect("rename a b errno", None, errno_of(seen, 0))
    target.expect("stat a errno", "ENOENT", errno_of(seen, 1))
    target.expect("read b", "x", value_of(seen, 2))
    target.expect("upper/b", {"type": "file", "content": "x", "mode": 0o640},
                  pick(seen["upper"].get("b"), "type", "content", "mode"))
    target.expect("upper/a", WHITEOUT, pick(seen["upper"].get("a"), "type", "rdev"))


def _redirect_max(target: Target) -> int:
    raw: Any = ((target.facts.get("overlay") or {}).get("parameters") or {}).get("redirect_max")
    return int(raw) if str(raw).isdigit() else 256  # the doc's default


@pytest.mark.clause("OVL-RENAME-005")
@pytest.mark.requires("overlay-redirect-dir")
def test_redirect_longer_than_redirect_max_is_exdev(target: Target) -> None:
    """With redirect_dir=on, move a directory whose path exceeds redirect_max bytes: rename MUST be EXDEV."""
    limit = _redirect_max(target)
    long = "l" * 200
    parts = [long] * (limit // 200 + 1)  # "/" + parts + "/d" is longer than the limit
    deep = "/".join(parts)
    lower = [{"name": "/".join(parts[:i + 1]), "type": "dir"} for i in range(len(parts))]
    lower += [{"name": f"{deep}/d", "type": "dir"}, {"name": f"{deep}/d/x", "content": "x"},
              {"name": "b", "type": "dir"}]
    seen = target.observe(overlay.run([lower], [op("rename", f"{deep}/d", to="b/e"), op("stat", f"{deep}/d/x")],
                                      options={"redirect_dir": "on"}))
    mounted(target, seen, needs=("redirect_dir",))
    target.note("redirect_max", limit)
    target.expect(f"rename of a directory whose redirect is {len(deep) + 3} bytes", "EXDEV", errno_of(seen, 0),
                  hint=f"redirect_max is {limit}")
    target.expect("stat of its child errno", None, errno_of(seen, 1))
    target.expect("upper/b/e", None, seen["upper"].get("b/e"))


@pytest.mark.clause("OVL-RENAME-006")
@pytest.mark.requires("overlay-redirect-dir")
def test_nofollow_does_not_follow_layer_redirects(target: Target) -> None:
    """With redirect_dir=nofollow, upper e redirects to /d (lower d/secret): e MUST NOT show secret."""
    lower = [{"name": "d", "type": "dir"}, {"name": "d/secret", "content": "s"}, {"name": "e", "type": "dir"}]
    upper = [{"name": "e", "type": "dir", "xattrs": {"trusted.overlay.redirect": "/d"}}]
    seen = target.observe(overlay.run([lower], [op("readdir", "e"), op("read", "e/secret")], upper=upper,
                                      options={"redirect_dir": "nofollow"}))
    mounted(target, seen, needs=("redirect_dir",))
    listing = value_of(seen, 0) or []
    target.expect_that("readdir e", "secret" not in listing,
                       "no entry of /d (an error such as EPERM, or a listing without secret)",
                       errno_of(seen, 0) or listing)
    target.expect_that("read e/secret", errno_of(seen, 1) is not None, "an error", value_of(seen, 1))
