"""Apply one OCI layer to a rootfs, as image-spec layer.md § Applying Changesets describes it.

The rules, in the order a reader meets them below:

- An entry is *added*: a directory over a directory keeps the children and takes the entry's
  attributes; any other collision unlinks what was there and creates the entry anew (layer.md
  § Changeset over existing files: a hardlinked partner of a replaced file keeps the old content).
- `.wh.<name>` deletes `<name>` of the lower layers, with everything under it; `.wh..wh..opq` in a
  directory deletes all of its lower children. Whiteouts "MUST only apply to resources in lower/parent
  layers": this applier remembers what the current layer wrote (`added`, and the directories that
  hold it, `ancestors`) and never deletes those, so a whiteout works whether it comes before or
  after the entries it sits beside (OCI-WH-004, OCI-WH-008; umoci does the same with upperPaths).
- A whiteout naming nothing, `.` or `..` (`.wh.`, `.wh..`, `.wh...`) is refused (OCI-WH-002, H-9), as
  are `.wh.` names used as directories or as anything but files (H-11) and AUFS metadata
  (`.wh..wh.plnk`, H-12). No `.wh.` name ever lands in the rootfs (OCI-WH-003).
- Attributes: mode, uid/gid (when root), mtime (directories last, since adding children changes
  theirs), and xattrs from PAX `SCHILY.xattr.*` records when the filesystem takes them.
- Devices are created when root, else skipped with a note (or refused, by policy); fifos always.
- Hardlinks link to an entry already in the rootfs (this layer's or a lower one), never a directory.

Containment is tarsafe's job: every directory is reached by fd-walking from the rootfs, so no name,
symlink or hardlink can write, delete or link outside it. Sizes are bounded by ApplyOptions.

On an error the rootfs is left part-applied: apply into a fresh directory and throw it away.

Speed (bench/layers_apply.py: 1.7x GNU tar, from 7.5x): tarread parses headers itself (see there why
not tarfile) and hands out views of the stream that go to os.write uncopied; parent directories come
from tarsafe's fd cache, not a walk from the root; a node is created first (O_EXCL, mkdir, symlink)
and only a collision looks at what was there, which is exact for any layer, not only the first one
into an empty directory, because the kernel checks the name atomically; owner, mode and times are
set through the fd the data went to; and the DiffID is hashed on another thread (streams.BackgroundHash).
The system calls per file are GNU tar's: openat, write, fchown, fchmod, utimensat, close.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from conformance.ref.attrs import (
    HOST_XATTRS,
    OVERLAY_XATTRS,
    XATTR_UNSUPPORTED,
    chmod_node,
    entry_times,
    entry_xattrs,
    list_xattrs,
    os_reason,
)
from conformance.ref.errors import LayerError, LimitError, RefError, UnsafePathError
from conformance.ref.oci import LAYER_TAR, layer_compression
from conformance.ref.streams import CHUNK, HashingReader, Readable, TarStream
from conformance.ref.tarread import Member, TarReader
from conformance.ref.tarsafe import Root, clean_name

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

DEVICE_POLICIES = ("create", "skip", "refuse")


@dataclass(frozen=True)
class ApplyOptions:
    """Limits and policies of one apply.

    `devices`: "create", "skip" (with a note) or "refuse" (an error); None means create when root and
    skip otherwise. `ownership`: apply uid/gid; None means when root.
    """

    max_bytes: int = 16 << 30
    max_entries: int = 1_000_000
    max_metadata: int = 16 << 20
    devices: str | None = None
    ownership: bool | None = None
    xattrs: bool = True
    #: Deliberately wrong behaviours, named by what they do ("ignore-opaque"...), only for the suite's
    #: own tests: each one shows that a conformance test catches an applier that behaves so.
    faults: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.devices is not None and self.devices not in DEVICE_POLICIES:
            raise ValueError(f"devices policy {self.devices!r} is not one of {DEVICE_POLICIES}")


@dataclass(frozen=True)
class ApplyStats:
    """What one apply did, and what it could not do (`notes`, e.g. devices skipped when not root)."""

    digest: str
    diff_id: str
    compressed_size: int
    size: int
    entries: int
    files: int
    directories: int
    symlinks: int
    hardlinks: int
    devices: int
    fifos: int
    whiteouts: int
    opaque_whiteouts: int
    bytes_written: int
    notes: tuple[str, ...]


def apply_layer(rootfs: str | os.PathLike[str], layer: bytes | Readable, *, media_type: str = LAYER_TAR,
                options: ApplyOptions | None = None, label: str = "<stream>",
                expected_diff_id: str | None = None) -> ApplyStats:
    """Apply the layer read from `layer` (bytes or a stream, compressed per `media_type`) onto `rootfs`.

    `label` names the layer in errors (apply_image passes a short digest). With `expected_diff_id`,
    the uncompressed tar's digest is checked once the stream is read (after the rootfs changed: to
    verify first, see image.apply_image).
    """
    options = options or ApplyOptions()
    raw = HashingReader(io.BytesIO(layer) if isinstance(layer, (bytes, bytearray)) else layer)
    compression = layer_compression(media_type)
    if compression == "gzip" and "gzip-as-tar" in options.faults:  # FAULT: the media type's compression ignored
        compression = "none"
    if compression == "zstd" and "no-zstd" in options.faults:  # FAULT: zstd layers refused
        raise LayerError(f"{media_type} is not supported", layer=label)
    try:
        stream = TarStream(raw, compression, options.max_bytes, label)
        try:
            with Root(rootfs, follow_symlinks="follow-symlinks" in options.faults) as root:  # FAULT point
                applier = _Applier(root, options, label)
                try:
                    applier.run(stream)
                except RefError:
                    if "lenient-reader" not in options.faults:
                        raise
                    lenient = True  # FAULT: a layer that cannot be read whole counts as done
                else:
                    lenient = False
            if lenient:
                return applier.stats(raw.digest(), "sha256:" + "0" * 64, raw.size, 0)
            stream.drain()
        finally:
            stream.close()
        while raw.read(CHUNK):  # bytes after a gzip stream's end are part of the blob's digest too
            pass
    finally:
        raw.close()
    diff_id = stream.diff_id()
    if "diff-id-of-blob" in options.faults:  # FAULT: the digest of the (compressed) blob as the DiffID
        diff_id = raw.digest()
    if expected_diff_id is not None and diff_id != expected_diff_id:
        raise LayerError(f"DiffID is {diff_id}, expected {expected_diff_id}", layer=label)
    return applier.stats(raw.digest(), diff_id, raw.size, stream.size)


class _Applier:
    """The state of one layer being applied; see the module doc for the rules."""

    def __init__(self, root: Root, options: ApplyOptions, label: str) -> None:
        self.root = root
        self.options = options
        self.label = label
        privileged = os.geteuid() == 0
        self.ownership = options.ownership if options.ownership is not None else privileged
        self.devices = options.devices or ("create" if privileged else "skip")
        self.added: set[str] = set()
        self.ancestors: set[str] = set()
        self.skipped: set[str] = set()
        self.directories: list[tuple[tuple[str, ...], Member]] = []
        self.counts: dict[str, int] = dict.fromkeys(
            ("entries", "files", "directories", "symlinks", "hardlinks", "devices", "fifos", "whiteouts",
             "opaque_whiteouts", "bytes_written"), 0)
        self.notes: dict[str, int] = {}
        self.faults = options.faults
        self.first_noted: dict[str, str] = {}

    # The loop

    def run(self, stream: TarStream) -> None:
        """Apply the entries one by one as they stream in, then the directories' modes and times."""
        reader = TarReader(stream, label=self.label, max_metadata=self.options.max_metadata)
        counts = self.counts
        for member in reader:
            counts["entries"] += 1
            if counts["entries"] > self.options.max_entries:
                raise LimitError(f"more than {self.options.max_entries} entries", layer=self.label,
                                 entry=member.name)
            self.entry(reader, member)
            self.root.release()
        self.finish()

    def entry(self, reader: TarReader, member: Member) -> None:
        """Apply one entry; every failure becomes a LayerError naming it."""
        try:
            parts = clean_name(member.name)
            self._entry(reader, member, parts)
        except (UnsafePathError, ValueError) as err:
            raise LayerError(str(err), layer=self.label, entry=member.name) from None
        except LayerError as err:
            raise err.within(layer=self.label, entry=member.name) from None
        except OSError as err:
            raise LayerError(os_reason(err), layer=self.label, entry=member.name) from None

    def _entry(self, reader: TarReader, member: Member, parts: tuple[str, ...]) -> None:
        if WHITEOUT in member.name:  # no component can start with ".wh." otherwise
            for component in parts[:-1]:
                if component.startswith(WHITEOUT):
                    raise LayerError(f"directory {component!r} has a whiteout name (whiteouts are files, H-11)")
            if parts and parts[-1].startswith(WHITEOUT) and "extract-whiteouts" not in self.faults:  # FAULT
                self._whiteout(member, parts)
                return
        key = "/".join(parts)
        if key in self.added:
            raise LayerError("the layer has this path twice (layer.md: duplicate entries MUST NOT occur)")
        if not parts:
            self._root_entry(member)
            return
        kind = member.type
        if kind != b"5" and key in self.ancestors:
            raise LayerError("replaces a directory this layer already wrote into")
        if not member.isreg() and kind not in _OTHER_TYPES:
            raise LayerError(f"unsupported entry type {kind!r}")
        if kind == b"1":
            self._hardlink(member, parts, key)  # resolves its target before anything is removed
            return
        parent = self.root.open_dir(parts[:-1], create=True)
        assert parent is not None
        self._mark(parts, key)
        name = parts[-1]
        # Each node is created with O_EXCL (or mkdir, symlink, mknod: all fail with EEXIST), and only
        # a collision looks at what was there: one syscall per new entry instead of an lstat first.
        # The kernel checks the name atomically, so this is as exact as looking first (layer.md §
        # Changeset over existing files: anything but a directory over a directory is replaced).
        if kind == b"5":
            self._directory(parent, name, parts, member)
        elif member.isreg():
            self._file(reader, parent, name, member)
        elif kind == b"2":
            if not member.linkname:  # Linux cannot make one (ENOENT); say why instead
                raise LayerError("symlink with an empty target")
            link = member.linkname.lstrip("/") if "relative-symlinks" in self.faults else member.linkname  # FAULT
            try:
                os.symlink(link, name, dir_fd=parent)
            except FileExistsError:
                self.root.remove(parent, name)
                os.symlink(link, name, dir_fd=parent)
            self._owner_at(parent, name, member)
            self._xattrs_at(parent, name, member)
            self._utime(name, member, dir_fd=parent, follow_symlinks=False)
            self.counts["symlinks"] += 1
        else:
            self._node(parent, name, key, member)

    def _mark(self, parts: tuple[str, ...], key: str) -> None:
        """Remember `key` as written, and its directories as holding this layer's entries.

        `ancestors` is closed under prefixes, so once an entry's parent is in it, so is every
        directory above (and a layer's entries mostly share their parent with the one before).
        """
        self.added.add(key)
        parent = key.rpartition("/")[0]
        if parent not in self.ancestors:
            for length in range(len(parts)):
                self.ancestors.add("/".join(parts[:length]))

    # Entry kinds

    def _root_entry(self, member: Member) -> None:
        # A root that is a symlink would send every later entry wherever it points (CVE-2021-29136).
        if not member.isdir():
            raise LayerError("the rootfs itself ('.' or '/') can only be a directory (CVE-2021-29136)")
        self.added.add("")
        self._owner_fd(self.root.fd, member, "")
        self._xattrs_fd(self.root.fd, member, "", replace=True)
        self.directories.append(((), member))

    def _directory(self, parent: int, name: str, parts: tuple[str, ...], member: Member) -> None:
        existed = False
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            existing = _lstat(parent, name)
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                existed = True
            else:
                self.root.remove(parent, name)
                os.mkdir(name, 0o700, dir_fd=parent)
        path = "/".join(parts)
        if existed and "dir-keeps-old-attributes" in self.faults:  # FAULT: the lower directory's attributes stay
            self.counts["directories"] += 1
            return
        if existed or (self.options.xattrs and member.pax_headers):
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            try:
                self._owner_fd(fd, member, path)
                self._xattrs_fd(fd, member, path, replace=existed)
            finally:
                os.close(fd)
        else:  # just made by mkdir, so not a symlink: no fd needed for the owner
            self._owner_at(parent, name, member)
        self.directories.append((parts, member))  # mode and mtime at the end
        self.counts["directories"] += 1

    def _file(self, reader: TarReader, parent: int, name: str, member: Member) -> None:
        # The stream is bounded by max_bytes, but a sparse entry (GNU or PAX) claims its size without
        # carrying the zeros: bound what is written too, before writing it.
        if self.counts["bytes_written"] + member.size > self.options.max_bytes:
            raise LimitError(f"extracted content passes the limit of {self.options.max_bytes} bytes "
                             f"(this entry claims {member.size}{', sparse' if member.issparse() else ''})")
        try:
            fd = os.open(name, _NEW_FILE, 0o600, dir_fd=parent)
        except FileExistsError:
            if "write-in-place" in self.faults:  # FAULT: truncate and write what is there (through links too)
                fd = os.open(name, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, dir_fd=parent)
            else:
                self.root.remove(parent, name)
                fd = os.open(name, _NEW_FILE, 0o600, dir_fd=parent)
        try:
            if member.sparse is None:
                written = reader.write_to(fd)
            else:
                written = _write_sparse(fd, reader, member.sparse)
                os.ftruncate(fd, member.size)
            self.counts["bytes_written"] += written
            if self.ownership:  # chown before chmod: chown clears setuid bits
                os.fchown(fd, member.uid, member.gid)
            else:
                self._owner_fd(fd, member, member.name)
            if member.pax_headers:
                self._xattrs_fd(fd, member, member.name, replace=False)
            os.fchmod(fd, (0o644 if "ignore-modes" in self.faults else member.mode) & 0o7777)  # FAULT
            self._utime(fd, member)
        finally:
            os.close(fd)
        self.counts["files"] += 1

    def _node(self, parent: int, name: str, key: str, member: Member) -> None:
        if "skip-devices" in self.faults:  # FAULT: devices and fifos silently left out
            return
        if _lstat(parent, name) is not None:  # devices and fifos are rare: look first, as before
            self.root.remove(parent, name)
        if member.isfifo():
            os.mkfifo(name, 0o600, dir_fd=parent)
            self.counts["fifos"] += 1
        else:
            kind = "char" if member.ischr() else "block"
            if self.devices == "refuse":
                raise LayerError(f"{kind} device {member.devmajor}:{member.devminor} refused by the devices policy")
            if self.devices == "skip":
                self._note("device nodes skipped (not root, or by policy)", key)
                self.skipped.add(key)
                return
            flag = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            try:
                os.mknod(name, flag | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=parent)
            except PermissionError:  # a user namespace: root, but no CAP_MKNOD over devices
                self._note("device nodes skipped (mknod not permitted)", key)
                self.skipped.add(key)
                return
            self.counts["devices"] += 1
        self._owner_at(parent, name, member)
        self._xattrs_at(parent, name, member)
        chmod_node(parent, name, member.mode & 0o7777)
        self._utime(name, member, dir_fd=parent, follow_symlinks=False)

    def _hardlink(self, member: Member, parts: tuple[str, ...], key: str) -> None:
        if "drop-hardlinks" in self.faults:  # FAULT: hardlink entries are skipped
            return
        try:
            target = clean_name(member.linkname)
        except UnsafePathError as err:
            raise LayerError(f"hardlink target {member.linkname!r}: {err}") from None
        shown = f"hardlink target {member.linkname!r}"
        if not target:
            raise LayerError(f"{shown} is the rootfs itself (a directory)")
        if target == parts:
            raise LayerError(f"{shown} is the entry itself")
        if "/".join(target) in self.skipped:
            self._note("hardlinks to skipped device nodes skipped", "/".join(parts))
            return
        try:
            source_dir = self.root.open_dir(target[:-1], create=False)
        except UnsafePathError as err:
            raise LayerError(f"{shown}: {err}") from None
        source = None if source_dir is None else _lstat(source_dir, target[-1])
        if source_dir is None or source is None:
            raise LayerError(f"{shown} does not exist in the rootfs (a hardlink must follow its target)")
        if stat.S_ISDIR(source.st_mode):
            raise LayerError(f"{shown} is a directory")
        parent = self.root.open_dir(parts[:-1], create=True)
        assert parent is not None
        self._mark(parts, key)
        if _lstat(parent, parts[-1]) is not None:
            self.root.remove(parent, parts[-1])
        # linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink (OCI-HL-004).
        os.link(target[-1], parts[-1], src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)
        self.counts["hardlinks"] += 1

    # Whiteouts

    def _whiteout(self, member: Member, parts: tuple[str, ...]) -> None:
        name = parts[-1]
        if not member.isreg():
            raise LayerError("a whiteout must be a regular file (H-11)")
        if name == OPAQUE:
            self.counts["opaque_whiteouts"] += 1
            directory = self.root.open_dir(parts[:-1], create=False)
            if directory is None or "ignore-opaque" in self.faults:  # FAULT: opaque markers do nothing
                return  # nothing below to hide (OCI-WH-011)
            for child in sorted(os.listdir(directory)):
                self._remove_lower(directory, child, (*parts[:-1], child))
            return
        if name.startswith(WHITEOUT + WHITEOUT):
            raise LayerError("AUFS metadata (.wh..wh.*) is not an OCI whiteout (H-12)")
        hidden = name[len(WHITEOUT):]
        if hidden in ("", ".", ".."):
            if "accept-bad-whiteouts" in self.faults:  # FAULT: silently ignored instead of refused
                return
            named = repr(hidden) if hidden else "nothing"
            raise LayerError(f"whiteout names {named}, not an entry (OCI-WH-002, H-9)")
        self.counts["whiteouts"] += 1
        directory = self.root.open_dir(parts[:-1], create="mkdir-whiteout-parents" in self.faults)  # FAULT point
        if directory is not None and _lstat(directory, hidden) is not None and "ignore-whiteouts" not in self.faults:
            self._remove_lower(directory, hidden, (*parts[:-1], hidden))

    def _remove_lower(self, directory: int, name: str, parts: tuple[str, ...]) -> None:
        """Delete `name` unless this layer wrote it; a directory holding this layer's entries is entered."""
        key = "/".join(parts)
        info = _lstat(directory, name)
        if info is None:
            return
        if "whiteouts-hit-own-layer" in self.faults:  # FAULT: forgets what this layer wrote
            self.root.remove(directory, name)
        elif stat.S_ISDIR(info.st_mode) and (key in self.ancestors or key in self.added):
            fd = os.open(name, _DIR_FLAGS, dir_fd=directory)
            try:
                for child in sorted(os.listdir(fd)):
                    self._remove_lower(fd, child, (*parts, child))
            finally:
                os.close(fd)
        elif key not in self.added:
            self.root.remove(directory, name)

    # Attributes

    def _owner_fd(self, fd: int, member: Member, path: str) -> None:
        if self.ownership:
            os.fchown(fd, member.uid, member.gid)
        elif (member.uid, member.gid) != (os.geteuid(), os.getegid()):
            self._note("ownership not applied (not root)", path)

    def _owner_at(self, parent: int, name: str, member: Member) -> None:
        if self.ownership:
            os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        elif (member.uid, member.gid) != (os.geteuid(), os.getegid()):
            self._note("ownership not applied (not root)", member.name)

    def _xattrs_fd(self, fd: int, member: Member, path: str, *, replace: bool) -> None:
        self._xattrs(fd, member, path, replace=replace, follow=True)

    def _xattrs_at(self, parent: int, name: str, member: Member) -> None:
        # os.setxattr has no dir_fd: name the entry through its directory's fd, without following it.
        self._xattrs(f"/proc/self/fd/{parent}/{name}", member, member.name, replace=False, follow=False)

    def _xattrs(self, target: int | str, member: Member, path: str, *, replace: bool,
                follow: bool) -> None:
        if not self.options.xattrs or "ignore-xattrs" in self.faults:  # FAULT point: xattrs dropped
            return
        wanted, refused = entry_xattrs(member)
        if refused:
            self._note("overlay xattrs not applied (H-15)", path)
        if replace:  # a directory over a directory takes the entry's attributes, xattrs included
            for stale in set(list_xattrs(target, follow)) - set(wanted):
                if not stale.startswith((*OVERLAY_XATTRS, *HOST_XATTRS)):
                    self._try_xattr(target, stale, None, follow, path)
        for attribute, data in sorted(wanted.items()):
            self._try_xattr(target, attribute, data, follow, path)

    def _try_xattr(self, target: int | str, attribute: str, data: bytes | None, follow: bool,
                   path: str) -> None:
        try:
            if data is None:
                os.removexattr(target, attribute, follow_symlinks=follow)
            else:
                os.setxattr(target, attribute, data, follow_symlinks=follow)
        except OSError as err:
            if err.errno not in XATTR_UNSUPPORTED:
                raise
            self._note(f"xattr {attribute} not applied ({os.strerror(err.errno)})", path)

    def _utime(self, target: int | str, member: Member, **where: Any) -> None:
        if "ignore-mtimes" in self.faults:  # FAULT: every entry keeps the time it was written
            return
        os.utime(target, ns=entry_times(member), **where)

    def _note(self, what: str, path: str) -> None:
        self.notes[what] = self.notes.get(what, 0) + 1
        self.first_noted.setdefault(what, path)

    # The end

    def finish(self) -> None:
        """Directory modes and mtimes last: creating children changed them (GNU tar does the same)."""
        for parts, member in reversed(self.directories):
            try:
                with _open_directory(self.root, parts) as fd:
                    if fd is not None:
                        os.fchmod(fd, member.mode & 0o7777)
                        self._utime(fd, member)
            except (OSError, UnsafePathError) as err:
                reason = os_reason(err) if isinstance(err, OSError) else str(err)
                raise LayerError(reason, layer=self.label, entry=member.name) from None
            self.root.release()

    def stats(self, digest: str, diff_id: str, compressed_size: int, size: int) -> ApplyStats:
        """The frozen account of this apply."""
        notes = tuple(f"{what}: {count} (first: {self.first_noted[what]!r})" for what, count in self.notes.items())
        return ApplyStats(digest=digest, diff_id=diff_id, compressed_size=compressed_size, size=size,
                          notes=notes, **self.counts)


_OTHER_TYPES = frozenset({b"1", b"2", b"3", b"4", b"5", b"6"})


def _write_sparse(fd: int, reader: TarReader, segments: list[tuple[int, int]]) -> int:
    """Write the data of a sparse entry at its segments' offsets (the holes stay holes); returns the bytes."""
    pending = iter(segments)
    offset, left = 0, 0
    written = 0
    for chunk in reader.chunks():
        view = chunk
        while view:
            while not left:
                offset, left = next(pending)
            done = os.pwrite(fd, view[:left], offset)
            offset += done
            left -= done
            written += done
            view = view[done:]
    return written


@contextmanager
def _open_directory(root: Root, parts: tuple[str, ...]) -> Iterator[int | None]:
    if not parts:
        yield root.fd
        return
    parent = root.open_dir(parts[:-1], create=False)
    if parent is None:
        yield None
        return
    fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
    try:
        yield fd
    finally:
        os.close(fd)


def _lstat(directory: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return None
