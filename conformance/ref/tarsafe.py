"""Containment: resolve layer paths inside a rootfs without ever leaving it.

Python's tarfile `data` filter refuses legitimate rootfs content (absolute symlinks, devices, setuid
bits), so containment is written here by hand, the way moby's go-archive does it with Go's os.Root:

- names are cleaned lexically first: a leading `/` is dropped (tar names are relative to the archive
  root), `.` and empty components vanish, and a `..` that would climb above the rootfs is refused;
- directories are then walked one component at a time from an open file descriptor of the rootfs,
  with O_NOFOLLOW|O_DIRECTORY, so a path string is never handed to the kernel to resolve;
- a symlink met on the way is followed only when it is relative and stays inside the rootfs
  (`lib -> usr/lib`); an absolute one (`a -> /`) or one that climbs out (`a -> ../..`) is refused
  (CVE-2021-29136, Docker CVE-2014-9356, containerd TestBreakouts);
- the last component is never followed: callers act on (directory fd, name) with *at() calls.

What this does not defend against is another process rewriting the rootfs while a layer is applied
(H-33, the docker cp CVE-2018-15664 race): apply into a directory nobody else writes.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import OrderedDict
from collections.abc import Sequence
from types import TracebackType

from conformance.ref.errors import UnsafePathError

#: Linux gives up after 40 symlinks in one lookup (path_resolution(7)); so does this walk (H-19).
MAX_SYMLINKS = 40

#: Directory fds kept open between entries; tar entries come grouped by directory, so a small cache
#: saves most of the walking.
CACHE_SIZE = 128

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def clean_name(name: str) -> tuple[str, ...]:
    """The components of a tar name inside the rootfs; () is the rootfs itself.

    `/etc/x` -> ("etc", "x"); `./a//b/` -> ("a", "b"); `a/../b` -> ("b",); `../x` is refused.
    """
    if "\x00" in name:
        raise UnsafePathError("name contains a NUL byte")
    if ".." not in name:  # the common case, in one pass of C: nothing climbs
        return tuple([component for component in name.split("/") if component and component != "."])
    parts: list[str] = []
    for component in name.split("/"):
        if component in ("", "."):
            continue
        if component == "..":
            if not parts:
                raise UnsafePathError("path escapes the rootfs")
            parts.pop()
            continue
        parts.append(component)
    return tuple(parts)


class Root:
    """An open rootfs; every directory inside it is reached by walking from its fd (see module doc).

    Directory fds handed out by `open_dir` are borrowed: valid until `release()`, which the layer
    applier calls between entries. Anything that removes a directory or symlink calls `forget()`,
    because a cached fd could then name a directory that is no longer where its path says.
    """

    def __init__(self, path: str | os.PathLike[str], *, follow_symlinks: bool = False) -> None:
        self.path = os.fspath(path)
        self.follow_symlinks = follow_symlinks  # True only in a deliberately faulty variant: the kernel follows
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._cache: OrderedDict[tuple[str, ...], tuple[int, tuple[str, ...]]] = OrderedDict()
        self._retired: list[int] = []
        self._recent: tuple[str, ...] = ()  # the key moved to the cache's end last

    def __enter__(self) -> Root:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close every fd this Root holds."""
        self.forget()
        self.release()
        os.close(self.fd)

    def forget(self) -> None:
        """Drop cached directories (their fds close at the next `release`)."""
        self._retired.extend(fd for fd, _ in self._cache.values())
        self._cache.clear()
        self._recent = ()

    def release(self) -> None:
        """End of an entry: close retired fds and keep the cache small."""
        if not self._retired and len(self._cache) <= CACHE_SIZE:
            return
        while len(self._cache) > CACHE_SIZE:
            _, (fd, _) = self._cache.popitem(last=False)
            self._retired.append(fd)
        for fd in self._retired:
            os.close(fd)
        self._retired.clear()

    def open_dir(self, parts: Sequence[str], *, create: bool) -> int | None:
        """A borrowed fd of the directory `parts` inside the rootfs, or None when it is missing.

        Missing directories are made (mode 0755, like tar's implied parents) when `create` is true.
        Raises UnsafePathError when a component is not a directory, or is a symlink that is absolute
        or leads out of the rootfs.
        """
        key = tuple(parts)
        if not key:
            return self.fd
        hit = self._cache.get(key)
        if hit is not None:
            if key != self._recent:  # entries come grouped by directory: skip the reordering for a run of them
                self._cache.move_to_end(key)
                self._recent = key
            return hit[0]
        real: tuple[str, ...] = ()
        start, current = 0, self.fd
        for length in range(len(key) - 1, 0, -1):
            hit = self._cache.get(key[:length])
            if hit is not None:
                start, (current, real) = length, hit
                break
        opened = self._walk(current, list(real), list(reversed(key[start:])), create=create)
        if opened is None:
            return None
        fd, resolved, owned = opened
        if owned:  # else the walk ended where it began (`a -> .`): that fd is the root's or cached
            self._cache[key] = (fd, resolved)
            self._recent = key
        return fd

    def _walk(self, current: int, real: list[str], pending: list[str], *,
              create: bool) -> tuple[int, tuple[str, ...], bool] | None:
        """Walk `pending` (a stack: last item next) from `current`, whose path in the rootfs is `real`."""
        owned: int | None = None  # the fd this walk opened and must close unless it returns it
        hops = 0
        link = ""
        try:
            while pending:
                component = pending.pop()
                if component == "..":  # only symlink targets bring these: names are cleaned
                    if not real:
                        raise UnsafePathError(f"symlink {link} escapes the rootfs")
                    real.pop()
                    fresh = self._open_real(real)
                    if owned is not None:
                        os.close(owned)
                    owned = current = fresh
                    continue
                where = "/".join([*real, component])
                try:
                    info = os.stat(component, dir_fd=current, follow_symlinks=self.follow_symlinks)  # FAULT point
                except FileNotFoundError:
                    if not create:
                        return None
                    os.mkdir(component, 0o755, dir_fd=current)
                else:
                    if stat.S_ISLNK(info.st_mode):
                        hops += 1
                        if hops > MAX_SYMLINKS:
                            raise UnsafePathError(f"too many levels of symbolic links at '{where}'")
                        target = os.readlink(component, dir_fd=current)
                        link = f"'{where}' -> {target!r}"
                        if target.startswith("/"):
                            raise UnsafePathError(f"parent {link} is an absolute symlink; refusing to follow it "
                                                  "out of the rootfs")
                        pending.extend(reversed([c for c in target.split("/") if c not in ("", ".")]))
                        continue
                    if not stat.S_ISDIR(info.st_mode):
                        raise UnsafePathError(f"parent '{where}' is not a directory")
                flags = _DIR_FLAGS & ~os.O_NOFOLLOW if self.follow_symlinks else _DIR_FLAGS  # FAULT point
                fresh = os.open(component, flags, dir_fd=current)
                if owned is not None:
                    os.close(owned)
                owned = current = fresh
                real.append(component)
        except BaseException:
            if owned is not None:
                os.close(owned)
            raise
        if owned is None:
            return current, tuple(real), False
        return owned, tuple(real), True

    def _open_real(self, real: Sequence[str]) -> int:
        """An owned fd of a symlink-free path, walked again from the root (for a symlink's `..`)."""
        current = os.dup(self.fd)
        for component in real:
            try:
                fresh = os.open(component, _DIR_FLAGS, dir_fd=current)
            finally:
                os.close(current)
            current = fresh
        return current

    def remove(self, dir_fd: int, name: str) -> None:
        """Remove `name` in `dir_fd`, a whole tree if it is a directory (never following symlinks)."""
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            remove_tree(dir_fd, name)
        else:
            os.unlink(name, dir_fd=dir_fd)
        if stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode):
            self.forget()


def remove_tree(dir_fd: int, name: str) -> None:
    """Remove the directory `name` in `dir_fd`, by fds: a symlink inside is removed, not followed."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        with os.scandir(fd) as entries:
            children = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for child, is_dir in children:
            if is_dir:
                remove_tree(fd, child)
                continue
            try:
                os.unlink(child, dir_fd=fd)
            except PermissionError:  # a read-only directory, when not root
                os.chmod(fd, 0o700)
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM):
            raise
        os.chmod(dir_fd, 0o700)
        os.rmdir(name, dir_fd=dir_fd)
