"""Scratch space on tmpfs, and a rootfs guarded by a sentinel tree beside it (for fixtures and for
hypothesis tests, which cannot use function-scoped fixtures)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from trees import inodes, snapshot

# /tmp is on the slow root filesystem on some hosts; /dev/shm is tmpfs nearly everywhere.
SHM = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def make_scratch() -> Path:
    """A fresh `conformance-ref-*` directory on tmpfs; remove it with `remove_scratch`."""
    return Path(tempfile.mkdtemp(prefix="conformance-ref-", dir=SHM))


def remove_scratch(path: Path) -> None:
    """rm -rf, first unmounting what a tool left below it (podman's overlay store mounts its own dir)
    and making directories writable (a test may leave read-only ones when not root)."""
    below = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        points = [line.split()[4] for line in mountinfo if line.split()[4].startswith(below)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            child = os.path.join(dirpath, name)
            if not os.path.islink(child):
                os.chmod(child, 0o700)
    shutil.rmtree(path)


@dataclass
class Jail:
    """A rootfs with a sentinel tree beside it (moby's testBreakout oracle, made stricter).

    `check()` proves nothing outside the rootfs changed: the whole scratch directory minus the rootfs is
    snapshotted with contents, modes, owners, times, xattrs and link counts, and no inode in the rootfs
    may be one of the sentinel's (a hardlink out would share it).
    """

    scratch: Path
    rootfs: Path
    sentinel: Path
    before: dict[str, tuple[object, ...]]
    sentinel_inodes: set[tuple[int, int]]

    @property
    def victim(self) -> Path:
        return self.sentinel / "victim"

    def remember(self) -> None:
        """Take the `before` snapshot again, after a test set up more things beside the rootfs."""
        self.before = snapshot(self.scratch, nlink=True, exclude=["rootfs"])

    def check(self) -> None:
        after = snapshot(self.scratch, nlink=True, exclude=["rootfs"])
        assert after == self.before, "something outside the rootfs changed"
        assert not inodes(self.rootfs) & self.sentinel_inodes, "the rootfs shares an inode with the sentinel"


def make_jail(scratch: Path) -> Jail:
    """A rootfs and a sentinel tree beside it, in `scratch`."""
    rootfs = scratch / "rootfs"
    sentinel = scratch / "sentinel"
    rootfs.mkdir()
    (sentinel / "sub").mkdir(parents=True)
    (sentinel / "victim").write_bytes(os.urandom(64))
    (sentinel / "readonly").write_text("read only\n")
    (sentinel / "readonly").chmod(0o400)
    (sentinel / "sub" / "deep").write_text("deep\n")
    os.setxattr(sentinel / "victim", "user.conformance", b"sentinel")
    before = snapshot(scratch, nlink=True, exclude=["rootfs"])
    return Jail(scratch, rootfs, sentinel, before, inodes(sentinel))
