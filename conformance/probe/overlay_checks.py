"""Overlay scenarios ("overlay.run"): layer dirs on the sandbox's tmpfs, a mount, ops on the merged view.

One contract (conformance/scenarios/overlay.py), three implementations: "kernel" mounts overlay with
mount(2), "fuse-overlayfs" runs that tool in the foreground, and "ref" hands the scenario to the
reference model (conformance/ref/overlay.py), which mounts nothing. Every mount is undone by a deferred
step, so an op that crashes or a SIGTERM leaves nothing mounted.

Faulty variants: ctx.fault names a clause; FAULT_BEHAVIOURS maps it to the behaviour the reference model
knows by name (its `faults` keyword), so the model itself never hears of clause IDs.
"""

from __future__ import annotations

import errno
import importlib
import os
import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

from conformance import PREFIX
from conformance.probe import syscalls
from conformance.probe.actions import Context, NotApplicable, action
from conformance.probe.overlay_faults import OVERLAY_FAULTS
from conformance.probe.overlay_ops import check_ops, run_ops
from conformance.probe.overlay_trees import build_layer, read_tree

JsonDict = dict[str, Any]

#: clause ID -> the deliberately wrong behaviour of conformance/ref/overlay.py that must break it.
FAULT_BEHAVIOURS: dict[str, str] = {clause: behaviour for clause, (behaviour, _what) in OVERLAY_FAULTS.items()}

_MOUNT_WAIT = 10.0  # seconds fuse-overlayfs may take to show its mount
_IGNORED = re.compile(r"unknown argument ignored: (\S+)")  # fuse-overlayfs' words for an option it drops
_STRERROR = {os.strerror(number): name for number, name in errno.errorcode.items()}


@action("overlay.run")
def overlay_run(params: JsonDict, ctx: Context) -> JsonDict:
    """Build the layers, mount them as ctx.implementation does, run the ops, read merged and upper."""
    if ctx.implementation == "ref":
        return _simulate(params, ctx)
    if ctx.implementation not in ("kernel", "fuse-overlayfs"):
        raise NotApplicable(f"{ctx.implementation} does not implement overlay mounts")
    check_ops(list(params.get("ops") or []))
    if ctx.implementation == "fuse-overlayfs" and params.get("data_lowers"):
        raise NotApplicable("fuse-overlayfs has no data-only lower layers (lowerdir=...::data)")
    options: JsonDict = dict(params.get("options") or {})
    # umask 0: a create or mkdir op gets exactly the mode it names, as in the model.
    old_umask = os.umask(0)
    ctx.sandbox.defer("restore umask", lambda: _set_umask(old_umask))
    lowers, data_only, upper, work, merged = _build(params, ctx, userxattr=bool(options.get("userxattr")))
    result: JsonDict = {"mount_error": None, "results": [], "merged": {}, "upper": {}}
    # fuse-overlayfs refuses the mount for any redirect_dir but off (and does no redirects): leave it out.
    if ctx.implementation == "fuse-overlayfs" and options.get("redirect_dir", "off") != "off":
        result["ignored_options"] = _option_words({"redirect_dir": options.pop("redirect_dir")})
    stack = ":".join(lowers) + "".join(f"::{path}" for path in data_only)  # overlayfs.rst: "::" before data-only
    data = ",".join([f"lowerdir={stack}", f"upperdir={upper}", f"workdir={work}",
                     *_option_words(options)])
    mount = _mount_kernel if ctx.implementation == "kernel" else _mount_fuse
    unmount = mount(ctx, data, merged, result)
    if result["mount_error"]:
        return result
    result["results"] = run_ops(merged, list(params.get("ops") or []))
    result["merged"] = read_tree(merged, xattrs=False)
    unmount()  # before reading upper: fuse-overlayfs and the kernel are done with it only then
    result["upper"] = read_tree(upper, xattrs=True)
    return result


def _build(params: JsonDict, ctx: Context, *, userxattr: bool) -> tuple[list[str], list[str], str, str, str]:
    """The lower dirs (top first), the data-only lower dirs, upper, work and merged dirs on the sandbox's tmpfs."""
    lowers: list[str] = []
    for n, entries in enumerate(params.get("lowers") or []):
        lowers.append(ctx.sandbox.path(f"lower{n}"))
        build_layer(lowers[-1], entries, userxattr=userxattr)
    data_only: list[str] = []
    for n, entries in enumerate(params.get("data_lowers") or []):
        data_only.append(ctx.sandbox.path(f"data{n}"))
        build_layer(data_only[-1], entries, userxattr=userxattr)
    upper, work, merged = (ctx.sandbox.path(name) for name in ("upper", "work", "merged"))
    build_layer(upper, params.get("upper") or [], userxattr=userxattr)
    os.mkdir(work, 0o755)
    os.mkdir(merged, 0o755)
    return lowers, data_only, upper, work, merged


def _set_umask(mask: int) -> None:
    os.umask(mask)


def _option_words(options: JsonDict) -> list[str]:
    """Contract options as mount(8) words: true -> the bare name, false -> left out, others -> name=value."""
    return [str(name) if value is True else f"{name}={value}" for name, value in options.items()
            if value is not False and value is not None]


def _unmount(merged: str) -> None:
    """umount2, lazily when the mount is busy; a second call (nothing mounted any more) does nothing."""
    try:
        syscalls.umount(merged)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # not a mount point (any more)
            return
        syscalls.umount(merged, syscalls.MNT_DETACH)


def _mount_kernel(ctx: Context, data: str, merged: str, result: JsonDict) -> Callable[[], None]:
    """mount(2) "overlay"; a refusal is the observation's mount_error."""
    try:
        syscalls.mount(f"{PREFIX}{ctx.sandbox.run_id}", merged, "overlay", 0, data)
    except OSError as exc:
        result["mount_error"] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return lambda: None
    ctx.sandbox.defer(f"umount {merged}", lambda: _unmount(merged))
    return lambda: _unmount(merged)


def _mount_fuse(ctx: Context, data: str, merged: str, result: JsonDict) -> Callable[[], None]:
    """fuse-overlayfs in the foreground (-f): a child of the probe, so cleanup can stop and reap it.

    It drops options it does not know (metacopy, index, userxattr, xino) with a line on stderr; they are
    reported in "ignored_options", so a test can tell "did otherwise" from "was not asked".
    """
    log_path = ctx.sandbox.path("fuse-overlayfs.log")
    with open(log_path, "wb") as log:
        try:
            child = subprocess.Popen(["fuse-overlayfs", "-f", "-o", data, merged], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log)
        except OSError as exc:
            raise NotApplicable(f"fuse-overlayfs cannot be started here: {exc}") from None
    ctx.sandbox.defer("stop fuse-overlayfs", lambda: _stop(child))
    deadline = time.monotonic() + _MOUNT_WAIT
    while not os.path.ismount(merged) and child.poll() is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fuse-overlayfs showed no mount at {merged} within {_MOUNT_WAIT}s")
        time.sleep(0.01)
    ctx.sandbox.defer(f"umount {merged}", lambda: _unmount(merged))
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        said = handle.read()
    # "lazytime" is its own default that it then fails to recognise: not an option of the scenario's.
    ignored = [word for word in _IGNORED.findall(said) if word != "lazytime"]
    result["ignored_options"] = result.get("ignored_options", []) + ignored
    if not os.path.ismount(merged):
        result["mount_error"] = _errno_in(said)
        result["mount_message"] = said.strip()

    def unmount() -> None:
        _unmount(merged)
        _stop(child)

    return unmount


def _errno_in(message: str) -> str:
    """The errno name whose strerror text ends fuse-overlayfs' last line ("...: No such file or directory")."""
    lines = message.strip().splitlines() or [""]
    return _STRERROR.get(lines[-1].rsplit(": ", 1)[-1], "EIO")


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Wait for fuse-overlayfs to exit after its unmount; kill it if it does not."""
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=5)


def _simulate(params: JsonDict, ctx: Context) -> JsonDict:
    """The reference model, with this host's overlay module parameters as the defaults of absent options."""
    from conformance.probe.facts import overlay_facts  # noqa: PLC0415

    behaviour = FAULT_BEHAVIOURS.get(ctx.fault or "")
    # Imported by name: the model is stdlib-only, like the probe, and loads only for "ref".
    simulate: Callable[..., JsonDict] = importlib.import_module("conformance.ref.overlay").simulate
    return simulate(params, defaults=dict(overlay_facts()["parameters"]),
                    faults=frozenset({behaviour}) if behaviour else frozenset())
