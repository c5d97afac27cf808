"""The container's filesystem view, built inside its new mount namespace just before execve.

Steps, in runc's order (libcontainer/rootfs_linux.go prepareRootfs, finalizeRootfs):

1. `/` recursively private (mount_namespaces(7) § Shared subtrees): the namespace is a copy of the
   host's, peers included, so without this a mount made for the container would appear on the host and
   the host's later mounts inside the container. runc's default is rslave; this runtime's default is
   rprivate, and `linux.rootfsPropagation` slave keeps rslave so host mounts still reach the container.
   The mount holding the rootfs is made private too if it is shared: pivot_root(2) refuses a new root
   whose parent mount is shared (EINVAL).
2. The rootfs bind-mounted onto itself (pivot_root(2): "new_root must be a path to a mount point").
3. `mounts[]` in the listed order (config.md: "The runtime MUST mount entries in the listed order"),
   each destination resolved inside the rootfs so a symlink in the rootfs cannot send it out.
4. The default devices (config-linux.md § Default Devices: /dev/null, zero, full, random, urandom, tty,
   and /dev/ptmx a symlink to pts/ptmx) bind-mounted from the host, as runc does in a user namespace
   (mknod would not work there), unless /dev itself is a bind mount.
5. pivot_root(".", ".") then a lazy unmount of the old root, made rslave first so the unmount cannot
   propagate to the host's mounts (pivot_root(2) § NOTES, and runc's comment in pivotRoot). Nothing of
   the host's tree stays reachable or listed in /proc/self/mountinfo.
6. After pivot_root: `linux.rootfsPropagation` on the new `/`, `readonlyPaths` (bind onto itself, remount
   read-only), `maskedPaths` (/dev/null over files, a read-only tmpfs over directories), and
   `root.readonly` (remount `/` read-only). Paths that do not exist are skipped, as runc skips them.
"""

from __future__ import annotations

import errno
import os

from conformance.ref import nsapi
from conformance.ref.mountopts import PROPAGATION, locked_flags
from conformance.ref.runspec import Mount, Spec

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"))
_MAX_LINKS = 40  # path_resolution(7): "the kernel ... maximum of 40 symbolic links"


def prepare_rootfs(spec: Spec, bundle: str, faults: frozenset[str]) -> None:
    """Steps 1-4: everything that happens while the host's tree is still the root."""
    slave = spec.linux.rootfs_propagation in ("slave", "rslave")
    flags = (nsapi.MS_SLAVE if slave else nsapi.MS_PRIVATE) | nsapi.MS_REC
    if "propagation-left-shared" in faults:  # FAULT: only `/` itself private, every other mount as inherited
        flags = nsapi.MS_PRIVATE
    nsapi.mount("", "/", None, flags)
    _parent_mount_private(spec.root_path)
    nsapi.mount(spec.root_path, spec.root_path, None, nsapi.MS_BIND | nsapi.MS_REC)
    for number, mount in enumerate(spec.mounts):
        if "no-default-mounts" in faults and mount.destination in ("/dev/pts", "/dev/shm", "/dev/mqueue"):
            continue  # FAULT
        try:
            _mount(spec.root_path, mount, bundle, inherit="propagation-left-shared" in faults)
        except OSError as err:
            raise OSError(err.errno, f"mounts[{number}] ({mount.destination}): {err.strerror or err}") from None
    if not any(m.destination == "/dev" and m.flags.bind for m in spec.mounts):
        _default_devices(spec.root_path)


def enter_rootfs(root: str, faults: frozenset[str]) -> None:
    """Step 5: make `root` the root of the mount namespace and drop the old one."""
    if "chroot-instead-of-pivot-root" in faults:  # FAULT: the host's tree stays mounted, one chroot escape away
        os.chroot(root)
        os.chdir("/")
        return
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(root, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new)
        nsapi.pivot_root(".", ".")  # the old root is now stacked on top of the new one, at "/"
        os.fchdir(old)  # pivot_root(2) does not promise where "." is afterwards
        if "old-root-left-mounted" not in faults:  # FAULT: when set, the host's tree stays mounted over "/"
            nsapi.mount("", ".", None, nsapi.MS_SLAVE | nsapi.MS_REC)
            nsapi.umount(".", nsapi.MNT_DETACH)
    finally:
        os.close(old)
        os.close(new)
    os.chdir("/")


def finish_rootfs(spec: Spec, faults: frozenset[str]) -> None:
    """Step 6, inside the new root."""
    if spec.linux.rootfs_propagation:
        nsapi.mount("", "/", None, PROPAGATION[spec.linux.rootfs_propagation])
    if "no-readonly-paths" not in faults:  # FAULT: when set, readonlyPaths stay writable
        for path in spec.linux.readonly_paths:
            _readonly(path)
    if "no-masked-paths" not in faults:  # FAULT: when set, maskedPaths stay readable
        for path in spec.linux.masked_paths:
            _mask(path)
    if spec.root_readonly and "readonly-root-ignored" not in faults:  # FAULT when set
        nsapi.mount("", "/", None, nsapi.MS_BIND | nsapi.MS_REMOUNT | nsapi.MS_RDONLY | _locked("/"))


def resolve_in_root(root: str, path: str) -> str:
    """`path` inside the container as a host path under `root`, symlinks followed as if `root` were `/`.

    ".." stops at the root and absolute link targets start from it again, as openat2(2)'s
    RESOLVE_IN_ROOT does (and runc's securejoin). A missing component ends the links to follow.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        try:
            target = os.readlink(os.path.join(root, *done, part))
        except OSError:  # not a symlink, or not there: taken as it is
            done.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise OSError(errno.ELOOP, f"{path}: too many levels of symbolic links in the rootfs")
        if target.startswith("/"):
            done = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return os.path.join(root, *done)


def _mount(root: str, mount: Mount, bundle: str, *, inherit: bool = False) -> None:
    """One mounts[] entry; a missing mount point is made (a file for a bind of a file, as runc does)."""
    target = resolve_in_root(root, mount.destination)
    flags = mount.flags
    source = mount.source or mount.type or "none"
    if flags.bind:
        source = os.path.join(bundle, source)  # config.md: bind sources are absolute or relative to the bundle
        if not os.path.exists(source):
            raise OSError(errno.ENOENT, f"bind source {source} does not exist")
    if not os.path.lexists(target):
        if flags.bind and not os.path.isdir(source):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        else:
            os.makedirs(target, 0o755, exist_ok=True)
    if flags.bind:
        nsapi.mount(source, target, None, flags.flags & (nsapi.MS_BIND | nsapi.MS_REC))
        if flags.remount_flags:
            nsapi.mount("", target, None, nsapi.MS_BIND | nsapi.MS_REMOUNT | flags.remount_flags | _locked(target))
    else:
        nsapi.mount(source, target, mount.type, flags.flags, flags.data or None)
    for propagation in () if inherit else flags.propagation:  # FAULT propagation-left-shared: none applied
        nsapi.mount("", target, None, propagation)


def _default_devices(root: str) -> None:
    """Bind the host's device nodes into the container's /dev, link /dev/ptmx and the /proc/self/fd names."""
    dev = resolve_in_root(root, "/dev")
    os.makedirs(dev, 0o755, exist_ok=True)
    for name in DEVICES:
        target = os.path.join(dev, name)
        if os.path.islink(target):  # a link would send the bind mount wherever it points
            os.unlink(target)
        if not os.path.exists(target):
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
        nsapi.mount(f"/dev/{name}", target, None, nsapi.MS_BIND)
    ptmx = os.path.join(dev, "ptmx")
    if os.path.lexists(ptmx):
        os.unlink(ptmx)
    os.symlink("pts/ptmx", ptmx)  # config-linux.md: "a bind-mount or symlink of the container's /dev/pts/ptmx"
    for name, target in DEV_LINKS:
        if not os.path.lexists(os.path.join(dev, name)):
            os.symlink(target, os.path.join(dev, name))


def _parent_mount_private(root: str) -> None:
    """Make the mount holding `root` private when it is shared (pivot_root(2) refuses a shared parent)."""
    best, shared = "", False
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split(" ")
            point = _unescape(fields[4])
            if (root == point or root.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best = point
                shared = any(f.startswith("shared:") for f in fields[6:fields.index("-")])
    if shared:
        nsapi.mount("", best, None, nsapi.MS_PRIVATE)


def _unescape(field: str) -> str:
    """A mountinfo path: the kernel writes space, tab, newline and backslash as three octal digits."""
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field


def _readonly(path: str) -> None:
    try:
        nsapi.mount(path, path, None, nsapi.MS_BIND | nsapi.MS_REC)
    except FileNotFoundError:
        return
    nsapi.mount(path, path, None, nsapi.MS_BIND | nsapi.MS_REMOUNT | nsapi.MS_RDONLY | _locked(path))


def _mask(path: str) -> None:
    try:
        nsapi.mount("/dev/null", path, None, nsapi.MS_BIND)
    except FileNotFoundError:
        return
    except NotADirectoryError:  # a directory: cover it with an empty read-only tmpfs instead
        nsapi.mount("tmpfs", path, "tmpfs", nsapi.MS_RDONLY)


def _locked(path: str) -> int:
    return locked_flags(os.statvfs(path).f_flag)
