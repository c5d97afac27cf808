"""Tests of the overlay area: what overlayfs.rst says a merged view and its upper dir look like after each op.

Every test runs one `overlay.run` scenario (conformance/scenarios/overlay.py) against the kernel, the
reference model and fuse-overlayfs alike, so the helpers here only read that one observation shape. A test
compares the fields its clause is about and nothing else, so that it fails for its own clause only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from conformance.target import Target

#: The upper dir's form of a deleted name (overlayfs.rst, "whiteouts and opaque directories").
WHITEOUT: dict[str, Any] = {"type": "chardev", "rdev": [0, 0]}


def mounted(target: Target, seen: Mapping[str, Any], needs: Iterable[str] = ()) -> None:
    """Fail unless the mount worked; skip when the implementation dropped an option the clause is about.

    fuse-overlayfs ignores metacopy, index, userxattr, xino and redirect_dir (the probe lists what it
    dropped in "ignored_options"): a clause about one of those says nothing about it, so that is "not
    applicable", never a pass.
    """
    __tracebackhide__ = True
    skip_if_ignored(target, seen, needs)
    target.expect("mount error", None, seen.get("mount_error"), hint=str(seen.get("mount_message", "")))


def skip_if_ignored(target: Target, seen: Mapping[str, Any], needs: Iterable[str]) -> None:
    """Skip (not applicable) when the implementation dropped one of these options instead of using them."""
    ignored = {str(word).split("=", 1)[0] for word in seen.get("ignored_options") or ()}
    dropped = sorted(ignored & set(needs))
    if dropped:
        pytest.skip(f"not applicable: {target.param.implementation} ignores the option(s) {', '.join(dropped)}")


def errno_of(seen: Mapping[str, Any], index: int) -> str | None:
    """The errno name of op number `index` (None: it worked)."""
    result: str | None = seen["results"][index]["errno"]
    return result


def value_of(seen: Mapping[str, Any], index: int) -> Any:
    """The value of op number `index` (None when it failed)."""
    return seen["results"][index]["value"]


def pick(node: Mapping[str, Any] | None, *fields: str) -> dict[str, Any] | None:
    """Only the fields a clause is about, so that a test does not fail for another clause's field."""
    if node is None:
        return None
    return {name: node.get(name) for name in fields}


def overlay_xattr(node: Mapping[str, Any] | None, name: str) -> str | None:
    """The value of an overlay xattr ("opaque", "redirect", "metacopy") on an upper node, or None."""
    if node is None:
        return None
    value: str | None = (node.get("xattrs") or {}).get(f"overlay.{name}")
    return value


def names_under(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Paths in a tree at or under prefix (all when empty), sorted."""
    if not prefix:
        return sorted(tree)
    return sorted(p for p in tree if p == prefix or p.startswith(prefix + "/"))
