"""OVL-MOUNT-*: which combinations of overlay mount options are refused, and where unset options come from."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.scenarios import overlay
from conformance.scenarios.overlay import op
from conformance.suite.overlay import errno_of, mounted, overlay_xattr, skip_if_ignored
from conformance.target import Target

_LOWER = [{"name": "a", "type": "dir"}, {"name": "a/d", "type": "dir"}, {"name": "a/d/x", "content": "x"},
          {"name": "b", "type": "dir"}]


def _mount_errors(target: Target, cases: list[dict[str, Any]], needs: tuple[str, ...]) -> list[str | None]:
    """The mount errno of each option set (one probe call), skipping where the implementation drops an option."""
    observations = target.probe(*(overlay.run([_LOWER], [], options=options) for options in cases))
    for observation in observations:
        skip_if_ignored(target, observation.data, needs)
    return [observation.data.get("mount_error") for observation in observations]


def _words(options: dict[str, Any]) -> str:
    return ",".join(name if value is True else f"{name}={value}" for name, value in options.items())


@pytest.mark.clause("OVL-MOUNT-001")
@pytest.mark.requires("userxattr")
def test_userxattr_allows_only_redirect_nofollow(target: Target) -> None:
    """With userxattr, redirect_dir=on or follow MUST be EINVAL and redirect_dir=nofollow MUST mount."""
    cases: list[dict[str, Any]] = [{"userxattr": True, "redirect_dir": mode} for mode in ("on", "follow", "nofollow")]
    errors = _mount_errors(target, cases, ("userxattr", "redirect_dir"))
    target.expect("mount errors (" + "; ".join(_words(c) for c in cases) + ")", ["EINVAL", "EINVAL", None], errors,
                  hint="user.* xattrs must not drive redirects")


@pytest.mark.clause("OVL-MOUNT-002")
@pytest.mark.requires("userxattr", "overlay-metacopy")
def test_userxattr_refuses_metacopy(target: Target) -> None:
    """With userxattr, metacopy=on MUST be EINVAL and metacopy=off MUST mount."""
    cases: list[dict[str, Any]] = [{"userxattr": True, "metacopy": "on"}, {"userxattr": True, "metacopy": "off"}]
    errors = _mount_errors(target, cases, ("userxattr", "metacopy"))
    target.expect("mount errors (" + "; ".join(_words(c) for c in cases) + ")", ["EINVAL", None], errors)


@pytest.mark.clause("OVL-MOUNT-003")
@pytest.mark.requires("overlay-metacopy", "overlay-redirect-dir")
def test_metacopy_needs_redirect_on(target: Target) -> None:
    """With metacopy=on, redirect_dir=off, follow or nofollow MUST be EINVAL and redirect_dir=on MUST mount."""
    modes = ("off", "follow", "nofollow", "on")
    cases: list[dict[str, Any]] = [{"metacopy": "on", "redirect_dir": mode} for mode in modes]
    errors = _mount_errors(target, cases, ("metacopy", "redirect_dir"))
    target.expect("mount errors (" + "; ".join(_words(c) for c in cases) + ")", ["EINVAL", "EINVAL", "EINVAL", None],
                  errors, hint="overlayfs.rst § Metadata only copy up: these conflict with metacopy=on")


@pytest.mark.clause("OVL-MOUNT-004")
def test_undefined_option_values_are_refused(target: Target) -> None:
    """Each of redirect_dir=sideways, metacopy=maybe, index=perhaps and xino=sometimes MUST each be EINVAL."""
    cases: list[dict[str, Any]] = [{"redirect_dir": "sideways"}, {"metacopy": "maybe"}, {"index": "perhaps"},
                                   {"xino": "sometimes"}]
    observations = target.probe(*(overlay.run([_LOWER], [], options=options) for options in cases))
    checked = 0
    for options, observation in zip(cases, observations, strict=True):
        ignored = {str(word).split("=", 1)[0] for word in observation.data.get("ignored_options") or ()}
        if ignored & set(options):
            continue  # the implementation dropped it: nothing to say about this value
        checked += 1
        target.expect(f"mount error ({_words(options)})", "EINVAL", observation.data.get("mount_error"))
    if not checked:
        pytest.skip(f"not applicable: {target.param.implementation} ignores every option of this clause")


@pytest.mark.clause("OVL-MOUNT-005")
def test_unset_redirect_dir_takes_the_module_parameter(target: Target) -> None:
    """No redirect_dir option, rename lower a/d b/e: EXDEV when the module's redirect_dir is N, a redirect when Y."""
    if target.param.implementation == "fuse-overlayfs":
        pytest.skip("not applicable: fuse-overlayfs has its own defaults, not the kernel module's parameters")
    param = str(((target.facts.get("overlay") or {}).get("parameters") or {}).get("redirect_dir", "N"))
    target.note("module redirect_dir", param)
    seen = target.observe(overlay.run([_LOWER], [op("rename", "a/d", to="b/e")]))
    mounted(target, seen)
    if param.upper().startswith("Y"):
        target.expect("rename a/d b/e errno (module redirect_dir=Y)", None, errno_of(seen, 0))
        target.expect("upper/b/e overlay.redirect", "/a/d", overlay_xattr(seen["upper"].get("b/e"), "redirect"))
    else:
        target.expect("rename a/d b/e errno (module redirect_dir=N)", "EXDEV", errno_of(seen, 0),
                      hint="no redirect_dir option: the module parameter's default applies")
