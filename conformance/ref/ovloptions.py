"""Overlay mount options as the kernel resolves them: defaults from module parameters, conflicts refused.

The rules follow fs/overlayfs/params.c `ovl_fs_params_verify` (6.5+; in 6.1 the same checks sit in
super.c `ovl_parse_opt` with the same outcomes) and overlayfs.rst:

- § renaming directories: "redirect_dir=off" means "follow" when the module parameter
  redirect_always_follow is on, else "nofollow"; the module parameter redirect_dir=Y makes "on" the
  default.
- § Metadata only copy up: "redirect_dir={off|nofollow|follow} and nfs_export=on mount options conflict
  with metacopy=on, and will result in an error"; without an explicit redirect_dir, metacopy=on turns
  redirects on.
- § Non-standard behavior / userxattr (params.c): userxattr with an explicit redirect_dir other than
  "nofollow" (so also "off" where it means "follow", seen on 6.18), or with an explicit metacopy=on, is
  EINVAL; otherwise userxattr silently turns redirects to "nofollow" and metacopy off.
- An unknown option name or value is EINVAL (fs_parse: "Unknown parameter", "Bad value for").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_ENUMS: dict[str, frozenset[str]] = {
    "redirect_dir": frozenset({"on", "off", "follow", "nofollow"}),
    "metacopy": frozenset({"on", "off"}),
    "index": frozenset({"on", "off"}),
    "nfs_export": frozenset({"on", "off"}),
    "xino": frozenset({"on", "off", "auto"}),
    "verity": frozenset({"on", "off", "require"}),
    "uuid": frozenset({"on", "off", "auto", "null"}),
}
_FLAGS = frozenset({"userxattr", "volatile"})


class MountRefused(Exception):
    """The kernel would refuse the mount; `errno` is the name the observation reports."""

    def __init__(self, errno: str, reason: str) -> None:
        self.errno = errno
        self.reason = reason
        super().__init__(f"{errno}: {reason}")


@dataclass(frozen=True, slots=True)
class Config:
    """The effective features of one mount (what /proc/mounts would show), as the model uses them."""

    redirect_create: bool  # redirect_dir=on: directory renames write overlay.redirect instead of EXDEV
    redirect_follow: bool  # redirects in the upper layer are followed on lookup (EPERM otherwise)
    metacopy: bool
    index: bool
    nfs_export: bool
    userxattr: bool
    xino: str
    redirect_max: int = 256  # module parameter: longest absolute redirect a rename may write (overlayfs.rst)


def _yes(value: Any) -> bool:
    """A module parameter as sysfs prints it ("Y"/"N"), or a bool from a caller."""
    return value is True or str(value).strip().upper() in {"Y", "1", "ON", "TRUE"}


def resolve(options: Mapping[str, Any], defaults: Mapping[str, Any], *, accept_bad: bool = False) -> Config:
    """The effective configuration, or MountRefused with the errno name; accept_bad never refuses (a fault)."""
    given: dict[str, Any] = {}
    for name, value in options.items():
        if value is None or value is False:  # left out of the mount data by the executors
            continue
        if name in _FLAGS:
            given[name] = True
        elif name in _ENUMS and str(value) in _ENUMS[name]:
            given[name] = str(value)
        elif not accept_bad:
            raise MountRefused("EINVAL", f"bad overlay option {name}={value}")
    always_follow = _yes(defaults.get("redirect_always_follow", "Y"))

    def redirect_mode(word: str) -> str:
        return ("follow" if always_follow else "nofollow") if word == "off" else word

    redirect = redirect_mode(given["redirect_dir"]) if "redirect_dir" in given else (
        "on" if _yes(defaults.get("redirect_dir", "N")) else redirect_mode("off"))
    metacopy = given["metacopy"] == "on" if "metacopy" in given else _yes(defaults.get("metacopy", "N"))
    index = given["index"] == "on" if "index" in given else _yes(defaults.get("index", "N"))
    nfs_export = given["nfs_export"] == "on" if "nfs_export" in given else _yes(defaults.get("nfs_export", "N"))
    verity = given.get("verity", "off") != "off"
    userxattr = bool(given.get("userxattr"))
    refuse = (lambda reason: None) if accept_bad else _refuse
    if verity and not metacopy:
        if "metacopy" in given:
            refuse("conflicting options: metacopy=off,verity")
        metacopy = True
    if metacopy and redirect != "on":
        if "metacopy" in given and "redirect_dir" in given:
            refuse(f"conflicting options: metacopy=on,redirect_dir={redirect}")
        if "redirect_dir" in given:
            metacopy = False  # "disabling metacopy due to redirect_dir=..."
        else:
            redirect = "on"
    if nfs_export and not index:
        if "nfs_export" in given and "index" in given:
            refuse("conflicting options: nfs_export=on,index=off")
        if "index" in given:
            nfs_export = False
        else:
            index = True
    if nfs_export and metacopy:
        if "nfs_export" in given and "metacopy" in given:
            refuse("conflicting options: nfs_export=on,metacopy=on")
        if "metacopy" in given:
            nfs_export = False
        else:
            metacopy = False
    if userxattr:
        if "redirect_dir" in given and redirect != "nofollow":
            refuse(f"conflicting options: userxattr,redirect_dir={redirect}")
        if metacopy and "metacopy" in given:
            refuse("conflicting options: userxattr,metacopy=on")
        if verity:
            refuse("conflicting options: userxattr,verity")
        redirect, metacopy = "nofollow", False
    return Config(redirect_create=redirect == "on", redirect_follow=redirect in ("on", "follow"),
                  metacopy=metacopy, index=index, nfs_export=nfs_export, userxattr=userxattr,
                  xino=str(given.get("xino", "auto" if _yes(defaults.get("xino_auto", "N")) else "off")),
                  redirect_max=_number(defaults.get("redirect_max"), 256))


def _number(value: Any, default: int) -> int:
    """A numeric module parameter as sysfs prints it, or the doc's default where the host has none."""
    return int(value) if str(value).strip().isdigit() else default


def _refuse(reason: str) -> None:
    raise MountRefused("EINVAL", reason)
