"""What COPY, ADD and WORKDIR put into the rootfs, as one staging tar applied with the ref applier.

Writing through `apply_layer` rather than with shutil keeps the image side contained by tarsafe: a
destination reached through a symlink of the base image that is absolute or leads out of the rootfs
is refused, as any layer entry would be. The context side is checked here: a source that leaves the
context, lexically (`../x`) or through a symlink, is refused (Docker: "forbidden path outside the
build context").

The rules follow Docker 20.10's classic builder, checked against `docker build`:

- a directory source copies its *contents*; the destination directory and any missing parents are
  created 0755, owned by --chown (else 0:0); an existing destination keeps its attributes;
- a file source lands at `dest/<name>` when dest ends with `/` or is an existing directory, else at
  `dest`; several sources need a destination ending with `/`;
- a top-level source symlink is followed (inside the context); symlinks inside a directory source
  are copied as symlinks; hardlinks inside one stay hardlinks;
- modes are the source's (or --chmod), owners 0:0 (or --chown); an ADD-extracted archive keeps the
  owners it records. Times are not copied: the builder sets every time to SOURCE_DATE_EPOCH.
- ADD extracts a local `.tar`, `.tar.gz` or `.tgz` that is a tar (Docker sniffs any file's content
  instead, and also takes bzip2 and xz); the archive is applied into an empty directory by the ref
  applier first, so a hostile archive is refused before anything reaches the rootfs.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import posixpath
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from conformance.ref.containerfile import Add, Copy, Workdir
from conformance.ref.errors import BuildError, LayerError, UnsafePathError
from conformance.ref.layers import apply_layer
from conformance.ref.oci import LAYER_GZIP, LAYER_TAR
from conformance.ref.tarsafe import Root

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_GLOB = frozenset("*?[")
_URL_PREFIXES = ("http://", "https://", "ftp://", "git@", "git://")


@dataclass(frozen=True, slots=True)
class Source:
    """One resolved source: its real path inside the context, and whether ADD extracts it."""

    path: str
    shown: str
    is_dir: bool
    archive: bool


def resolve_sources(step: Copy, context: str | os.PathLike[str]) -> tuple[Source, ...]:
    """The sources of a COPY or ADD, globs expanded in byte order, each checked to stay in the context."""
    top = os.path.realpath(context)
    found: list[Source] = []
    for written in step.sources:
        if written.startswith(_URL_PREFIXES) or "://" in written:
            raise BuildError(f"remote source {written!r} is refused: the reference builder does not fetch "
                             "(download it into the context)", line=step.line, instruction=step.text)
        relative = posixpath.normpath(written.lstrip("/") or ".")
        if relative == ".." or relative.startswith("../"):
            raise BuildError(f"source {written!r} escapes the build context; move it into the context",
                             line=step.line, instruction=step.text)
        if _GLOB & set(relative):
            matches = sorted(glob.glob(os.path.join(top, relative)), key=os.fsencode)
            if not matches:
                raise BuildError(f"no file in the context matches {written!r}", line=step.line,
                                 instruction=step.text)
        else:
            matches = [os.path.join(top, relative)]
        for match in matches:
            found.append(_source(step, top, match, written))
    return tuple(found)


def _source(step: Copy, top: str, path: str, written: str) -> Source:
    real = os.path.realpath(path)
    if real != top and not real.startswith(top + os.sep):
        raise BuildError(f"source {written!r} leads out of the build context (a symlink to {real}); copy the "
                         "file into the context", line=step.line, instruction=step.text)
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise BuildError(f"source {written!r} is not in the build context", line=step.line,
                         instruction=step.text) from None
    is_dir = stat.S_ISDIR(info.st_mode)
    archive = (isinstance(step, Add) and not is_dir and real.endswith(ARCHIVE_SUFFIXES)
               and tarfile.is_tarfile(real))
    return Source(real, written, is_dir, archive)


def inputs_digest(sources: tuple[Source, ...]) -> str:
    """A digest of what the step reads: names, kinds, modes and contents (no times: they are not copied)."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(f"source {source.shown}\0{source.archive}\0".encode())
        for name, info in _walk(source.path, follow_top=True):
            kind = stat.S_IFMT(info.st_mode)
            digest.update(f"{name}\0{kind:o}\0{stat.S_IMODE(info.st_mode):o}\0".encode())
            full = os.path.join(source.path, name) if name else source.path
            if stat.S_ISREG(kind):
                with open(full, "rb") as content:
                    while chunk := content.read(1 << 20):
                        digest.update(chunk)
            elif stat.S_ISLNK(kind):
                digest.update(os.fsencode(os.readlink(full)))
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                digest.update(f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}".encode())
            digest.update(b"\n")
    return f"sha256:{digest.hexdigest()}"


def _walk(top: str, *, follow_top: bool) -> Iterator[tuple[str, os.stat_result]]:
    """(relative name, lstat) of `top` ("" for itself) and everything below, depth first in byte order."""
    stack: list[str] = [""]
    while stack:
        name = stack.pop()
        full = os.path.join(top, name) if name else top
        info = os.stat(full) if (not name and follow_top) else os.lstat(full)
        yield name, info
        if stat.S_ISDIR(info.st_mode):
            children = sorted(os.listdir(full), key=os.fsencode, reverse=True)
            stack.extend(posixpath.join(name, child) if name else child for child in children)


def destination(step: Copy, workdir: str) -> str:
    """The absolute destination (relative ones are under WORKDIR), with its trailing `/` kept."""
    joined = posixpath.join(workdir, step.dest)
    slash = step.dest.endswith("/") or step.dest in (".", "..") or step.dest.endswith(("/.", "/.."))
    clean = posixpath.normpath("/" + joined.lstrip("/"))
    return clean if clean == "/" or not slash else clean + "/"


def stage_copy(step: Copy, sources: tuple[Source, ...], rootfs: str, workdir: str, scratch: str,
               epoch: int) -> bytes:
    """The staging tar of a COPY or ADD, to apply onto `rootfs` (the tree after the previous step)."""
    dest = destination(step, workdir)
    parts = _parts(dest)
    into_dir = dest.endswith("/") or not parts or _is_dir(rootfs, parts, step)
    if len(sources) > 1 and not into_dir:
        raise BuildError("with several sources the destination must be a directory ending with '/'",
                         line=step.line, instruction=step.text)
    owner = step.chown or (0, 0)
    writer = _Stager(epoch, step.chmod)
    created: set[tuple[str, ...]] = set()
    for source in sources:
        if source.is_dir or source.archive:
            target = parts
        else:
            target = (*parts, os.path.basename(source.path)) if into_dir else parts
        parent = target if (source.is_dir or source.archive) else target[:-1]
        for missing in _missing_dirs(rootfs, parent, step):
            if missing not in created:
                created.add(missing)
                writer.directory(missing, owner)
        if source.archive:
            extracted = tempfile.mkdtemp(prefix="add-", dir=scratch)
            _extract(step, source, extracted)
            writer.tree(extracted, target, step.chown)
        elif source.is_dir:
            writer.tree(source.path, target, owner)
        else:
            writer.file(source.path, target, owner, follow=True)
    return writer.close()


def stage_workdir(rootfs: str, path: str, step: Workdir, epoch: int) -> bytes | None:
    """The staging tar that makes WORKDIR `path` (0755, 0:0, parents too), or None when it exists."""
    missing = _missing_dirs(rootfs, _parts(path), step)
    if not missing:
        return None
    writer = _Stager(epoch, None)
    for parts in missing:
        writer.directory(parts, (0, 0))
    return writer.close()


def _parts(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part)


def _is_dir(rootfs: str, parts: tuple[str, ...], step: Copy) -> bool:
    with Root(rootfs) as root:
        try:
            return root.open_dir(parts, create=False) is not None
        except UnsafePathError:
            return False  # a file there is replaced; an escaping symlink is refused when the tar is applied


def _missing_dirs(rootfs: str, parts: tuple[str, ...], step: Copy | Workdir) -> list[tuple[str, ...]]:
    """The directories on `parts` that do not exist yet, outermost first."""
    with Root(rootfs) as root:
        for length in range(1, len(parts) + 1):
            try:
                found = root.open_dir(parts[:length], create=False)
            except UnsafePathError as err:
                raise BuildError(f"destination /{'/'.join(parts[:length])}: {err}", line=step.line,
                                 instruction=step.text) from None
            if found is None:
                return [parts[:n] for n in range(length, len(parts) + 1)]
    return []


def _extract(step: Copy, source: Source, into: str) -> None:
    with open(source.path, "rb") as archive:
        media_type = LAYER_GZIP if archive.read(2) == b"\x1f\x8b" else LAYER_TAR
        archive.seek(0)
        try:
            apply_layer(into, archive, media_type=media_type, label=source.shown)
        except LayerError as err:
            raise BuildError(f"archive refused: {err}; fix or remove the archive", line=step.line,
                             instruction=step.text) from None


class _Stager:
    """Writes the staging tar: deterministic headers, names relative to the rootfs."""

    def __init__(self, epoch: int, chmod: int | None) -> None:
        self.epoch = epoch
        self.chmod = chmod
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (closed in close())
        self.links: dict[tuple[int, int], str] = {}

    def close(self) -> bytes:
        self.tar.close()
        return self.buffer.getvalue()

    def _info(self, parts: tuple[str, ...], kind: bytes, mode: int, owner: tuple[int, int]) -> tarfile.TarInfo:
        info = tarfile.TarInfo("/".join(parts))
        info.type = kind
        info.mode = self.chmod if self.chmod is not None and kind in (tarfile.REGTYPE, tarfile.DIRTYPE) else mode
        info.uid, info.gid = owner
        info.uname = info.gname = ""
        info.mtime = self.epoch
        return info

    def directory(self, parts: tuple[str, ...], owner: tuple[int, int]) -> None:
        """A directory the step creates on the way to its destination: 0755 whatever --chmod says."""
        info = self._info(parts, tarfile.DIRTYPE, 0o755, owner)
        info.mode = 0o755
        self.tar.addfile(info)

    def file(self, path: str, parts: tuple[str, ...], owner: tuple[int, int] | None, *, follow: bool) -> None:
        info = os.stat(path) if follow else os.lstat(path)
        self._node(path, parts, info, owner)

    def tree(self, top: str, parts: tuple[str, ...], owner: tuple[int, int] | None) -> None:
        """Everything below directory `top` (not `top` itself) under `parts`."""
        for name, info in _walk(top, follow_top=True):
            if name:
                self._node(os.path.join(top, name), (*parts, *name.split("/")), info, owner)

    def _node(self, path: str, parts: tuple[str, ...], info: os.stat_result, owner: tuple[int, int] | None) -> None:
        mode = stat.S_IMODE(info.st_mode)
        who = owner if owner is not None else (info.st_uid, info.st_gid)
        kind = stat.S_IFMT(info.st_mode)
        if stat.S_ISDIR(kind):
            self.tar.addfile(self._info(parts, tarfile.DIRTYPE, mode, who))
        elif stat.S_ISLNK(kind):
            entry = self._info(parts, tarfile.SYMTYPE, mode, who)
            entry.linkname = os.readlink(path)
            self.tar.addfile(entry)
        elif stat.S_ISREG(kind):
            first = self.links.get((info.st_dev, info.st_ino)) if info.st_nlink > 1 else None
            entry = self._info(parts, tarfile.REGTYPE, mode, who)
            if first is not None:
                entry.type, entry.linkname = tarfile.LNKTYPE, first
                self.tar.addfile(entry)
                return
            if info.st_nlink > 1:
                self.links[(info.st_dev, info.st_ino)] = entry.name
            entry.size = info.st_size
            with open(path, "rb") as content:
                self.tar.addfile(entry, content)
        elif stat.S_ISFIFO(kind) or stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
            tar_type = tarfile.FIFOTYPE if stat.S_ISFIFO(kind) else (
                tarfile.CHRTYPE if stat.S_ISCHR(kind) else tarfile.BLKTYPE)
            entry = self._info(parts, tar_type, mode, who)
            if not stat.S_ISFIFO(kind):
                entry.devmajor, entry.devminor = os.major(info.st_rdev), os.minor(info.st_rdev)
            self.tar.addfile(entry)
        # sockets cannot be stored in a tar: left out, as diff_trees leaves them out of layers
