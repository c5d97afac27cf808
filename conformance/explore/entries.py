"""A layer's entries as data: read from a blob (tar, gzip, zstd) or from an overlay upper directory.

A layer says what changed, and whiteouts are half of that: `.wh.<name>` deletes a lower `<name>`,
`.wh..wh..opq` hides all lower children of its directory (image-spec layer.md § Whiteouts). They are
kept here as entries of their own kinds, with the path they hide, so every view can mark them. An
overlay upper directory spells the same things as a 0/0 character device and the xattr
`trusted.overlay.opaque=y` (overlayfs.rst § whiteouts and opaque directories).
"""

from __future__ import annotations

import os
import stat
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

from conformance.ref.layers import OPAQUE, WHITEOUT, ApplyOptions
from conformance.ref.streams import CHUNK, HashingReader, Readable, TarStream
from conformance.ref.tarread import Member, read_members
from conformance.ref.tarsafe import clean_name

OPAQUE_XATTR = "trusted.overlay.opaque"

#: Entry kinds, in the words the views print.
KINDS = ("file", "dir", "symlink", "hardlink", "char", "block", "fifo", "whiteout", "opaque")
MARKERS = ("whiteout", "opaque")

_TAR_KINDS = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file", tarfile.DIRTYPE: "dir",
              tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char",
              tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo", tarfile.GNUTYPE_SPARSE: "file"}
_MODE_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "char",
               stat.S_IFBLK: "block", stat.S_IFIFO: "fifo"}
_TYPE_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "hardlink": stat.S_IFREG,
              "char": stat.S_IFCHR, "block": stat.S_IFBLK, "fifo": stat.S_IFIFO, "whiteout": stat.S_IFREG,
              "opaque": stat.S_IFREG}


@dataclass(frozen=True, slots=True)
class LayerEntry:
    """One entry of a layer. `hides` is the path a whiteout deletes, or the directory an opaque marker empties."""

    path: str
    kind: str
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    target: str = ""
    hides: str = ""
    device: tuple[int, int] | None = None

    @property
    def is_marker(self) -> bool:
        """A whiteout or an opaque marker: it changes what lies below, and is not itself in the rootfs."""
        return self.kind in MARKERS

    def mode_string(self) -> str:
        """`drwxr-xr-x`, as ls -l prints it."""
        return stat.filemode(_TYPE_BITS[self.kind] | (self.mode & 0o7777))

    def meaning(self) -> str:
        """What the entry does to the layers below, in words; empty for plain entries."""
        if self.kind == "whiteout":
            return f"whiteout of {self.hides}"
        if self.kind == "opaque":
            return f"opaque: hides lower children of {self.hides + '/' if self.hides else '/'}"
        return ""

    def to_json(self) -> dict[str, object]:
        """Stable keys; the mode as an octal string, as people read it."""
        doc: dict[str, object] = {"path": self.path, "type": self.kind, "mode": f"{self.mode & 0o7777:04o}",
                                  "uid": self.uid, "gid": self.gid, "size": self.size}
        if self.target:
            doc["target"] = self.target
        if self.kind in MARKERS:
            doc["hides"] = self.hides
        if self.device is not None:
            doc["device"] = list(self.device)
        return doc


@dataclass(frozen=True)
class LayerContent:
    """A whole layer read once: its entries in archive order, its digest and its uncompressed size and DiffID."""

    entries: tuple[LayerEntry, ...]
    digest: str
    compressed_size: int
    size: int
    diff_id: str

    def count(self, *kinds: str) -> int:
        """How many entries are of these kinds."""
        return sum(1 for e in self.entries if e.kind in kinds)

    @property
    def files(self) -> int:
        """Entries that are in the rootfs and are not directories: what a person calls files."""
        return sum(1 for e in self.entries if e.kind not in ("dir", *MARKERS))

    @property
    def whiteouts(self) -> int:
        """Whiteouts and opaque markers."""
        return self.count(*MARKERS)


def entry_of(member: Member) -> LayerEntry | None:
    """The entry a tar member stands for; None for the rootfs itself (`./`)."""
    parts = clean_name(member.name)
    if not parts:
        return None
    path = "/".join(parts)
    parent = "/".join(parts[:-1])
    name = parts[-1]
    base = LayerEntry(path, "file", member.mode, member.uid, member.gid)
    if name == OPAQUE:
        return replace(base, kind="opaque", hides=parent)
    if name.startswith(WHITEOUT):
        hidden = name[len(WHITEOUT):]
        return replace(base, kind="whiteout", hides=f"{parent}/{hidden}" if parent else hidden)
    kind = _TAR_KINDS.get(member.type, "file")
    target = member.linkname if kind in ("symlink", "hardlink") else ""
    if kind == "hardlink":
        target = "/".join(clean_name(target))
    device = (member.devmajor, member.devminor) if kind in ("char", "block") else None
    return replace(base, kind=kind, size=member.size if kind == "file" else 0, target=target, device=device)


def sniff(head: bytes) -> str:
    """The compression of a blob from its first bytes: "gzip", "zstd" or "none"."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    return "none"


def compression_of(media_type: str) -> str:
    """"none", "gzip" or "zstd" from a layer media type (Docker's too)."""
    if media_type.endswith("zstd"):
        return "zstd"
    if media_type.endswith(("gzip", "+gzip")):
        return "gzip"
    return "none"


def read_layer(raw: Readable, compression: str, label: str, *, options: ApplyOptions | None = None) -> LayerContent:
    """Read every entry of a layer stream, bounded like an apply (options.max_bytes, max_entries)."""
    options = options or ApplyOptions()
    hashing = HashingReader(raw)
    stream = TarStream(hashing, compression, options.max_bytes, label)
    try:
        entries = []
        for _tar, member in read_members(stream, label=label, max_metadata=options.max_metadata):
            entry = entry_of(member)
            if entry is not None:
                entries.append(entry)
            if len(entries) > options.max_entries:
                raise ValueError(f"layer {label}: more than {options.max_entries} entries")
        stream.drain()
        while hashing.read(CHUNK):  # the blob's digest covers every byte, trailing ones too
            pass
        return LayerContent(tuple(entries), hashing.digest(), hashing.size, stream.size, stream.diff_id())
    finally:
        stream.close()


def read_blob_file(path: str | os.PathLike[str], *, options: ApplyOptions | None = None) -> LayerContent:
    """A layer blob on disk, of whatever compression its first bytes say."""
    with open(path, "rb") as blob:
        compression = sniff(blob.read(4))
        blob.seek(0)
        return read_layer(blob, compression, Path(path).name, options=options)


def read_upper(root: str | os.PathLike[str]) -> tuple[LayerEntry, ...]:
    """The entries of an overlay upper directory (a container's changes), in path order.

    A 0/0 character device is a whiteout and `trusted.overlay.opaque=y` an opaque directory; a
    `.wh.` file is read as a whiteout too, for uppers written in the OCI spelling.
    """
    found: list[LayerEntry] = []
    top = Path(root)
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(top).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            path = f"{rel_dir}/{name}" if rel_dir else name
            info = os.lstat(full)
            kind = _MODE_KINDS.get(stat.S_IFMT(info.st_mode), "file")
            base = LayerEntry(path, kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
            if kind == "char" and info.st_rdev == 0:
                found.append(replace(base, kind="whiteout", hides=path))
                continue
            if name == OPAQUE:
                found.append(replace(base, kind="opaque", hides=rel_dir))
                continue
            if name.startswith(WHITEOUT):
                hidden = name[len(WHITEOUT):]
                found.append(replace(base, kind="whiteout", hides=f"{rel_dir}/{hidden}" if rel_dir else hidden))
                continue
            rdev = (os.major(info.st_rdev), os.minor(info.st_rdev)) if kind in ("char", "block") else None
            target = os.readlink(full) if kind == "symlink" else ""
            found.append(replace(base, size=info.st_size if kind == "file" else 0, target=target, device=rdev))
            if kind == "dir" and _opaque(full):
                found.append(replace(base, path=f"{path}/{OPAQUE}", kind="opaque", hides=path))
    return tuple(found)


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False
