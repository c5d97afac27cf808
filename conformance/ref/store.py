"""A reference layer store in the shape of Docker's overlay2 graph driver: one directory per layer, overlaid.

`Store(root).unpack(layout, ref)` puts each layer of an image in `layers/<chain-id-hex>/diff`, keyed by
its ChainID (config.md § Layer ChainID: the id of the filesystem a stack of layers produces), so two
images with the same base share its directories. Each diff is in the kernel's overlay format, not the
OCI one (overlayfs.rst § "whiteouts and opaque directories"):

- the layer is applied into an empty directory with `apply_layer`; there, a whiteout names nothing
  and vanishes, because the files it hides live in the lower layers' directories;
- a second pass over the blob reads the entry names, and every `.wh.<name>` becomes a character
  device 0/0 called `<name>`, every `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its
  directory. A whiteout of something the same layer adds again is dropped (layer.md: whiteouts apply
  only to lower layers), so it cannot hide the layer's own file;
- a directory the layer implies but does not list (`etc/x` without `etc/`) takes the attributes of
  the same directory in a lower layer, since in an overlay the topmost directory's mode is the one seen.

`create_container(image, name)` makes `containers/<name>/{upper,work,merged}` and returns what
`docker inspect` shows as GraphDriver.Data; `mount`/`umount` mount the kernel overlay with mount(2)
through ctypes; `remove()` unmounts whatever is mounted under the root and deletes it all. Directory
walks never follow symlinks: a layer's `lib -> /` cannot send a whiteout device outside its diff.

Needs root: mknod of whiteouts (CAP_MKNOD), trusted.* xattrs and mount (CAP_SYS_ADMIN). Standard
library only; it ships to hosts with the rest of conformance/ref.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conformance.ref import nsapi
from conformance.ref.digest import chain_id, parse_digest
from conformance.ref.errors import RefError
from conformance.ref.layers import OPAQUE, WHITEOUT, ApplyOptions, apply_layer
from conformance.ref.layout import Layout
from conformance.ref.oci import Descriptor, layer_compression
from conformance.ref.streams import TarStream
from conformance.ref.tarread import read_members
from conformance.ref.tarsafe import clean_name

PREFIX = "conformance-"
OPAQUE_XATTR = "trusted.overlay.opaque"

#: Switches of deliberately wrong behaviour, named by what they do (see ApplyOptions.faults).
FAULTS = frozenset({
    "whiteouts-as-files",  # leave `.wh.<name>` and `.wh..wh..opq` as plain files: overlay shows them, hides nothing
    "lowers-bottom-first",  # LowerDir lists the base layer first, so the base wins over every layer above it
})

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class StoreError(RefError):
    """The store cannot do what was asked: a bad name, a missing container, no overlay, not root."""


@dataclass(frozen=True)
class StoredLayer:
    """One unpacked layer: where its overlay-format diff lives and what it is."""

    chain_id: str
    diff_id: str
    digest: str
    path: Path  # layers/<hex>/diff


@dataclass(frozen=True)
class StoredImage:
    """An unpacked image: its manifest digest and its layers, base first."""

    manifest: str
    layers: tuple[StoredLayer, ...]


@dataclass(frozen=True)
class GraphDriverData:
    """What `docker inspect` shows under GraphDriver for an overlay2 container."""

    lower_dir: str
    upper_dir: str
    work_dir: str
    merged_dir: str

    def to_json(self) -> dict[str, object]:
        """Docker's spelling: {"Name": "overlay2", "Data": {"LowerDir": ..., ...}}."""
        return {"Name": "overlay2", "Data": {"LowerDir": self.lower_dir, "MergedDir": self.merged_dir,
                                             "UpperDir": self.upper_dir, "WorkDir": self.work_dir}}

    def mount_options(self) -> str:
        """The overlay mount data; ':' and ',' separate options, so paths holding them are refused."""
        for path in (self.lower_dir, self.upper_dir, self.work_dir):
            if "," in path or "\\" in path:
                raise StoreError(f"path {path!r} cannot be named in overlay mount options (',' or '\\')")
        return f"lowerdir={self.lower_dir},upperdir={self.upper_dir},workdir={self.work_dir}"


@dataclass(frozen=True)
class Container:
    """A container's directories in the store."""

    name: str
    path: Path
    data: GraphDriverData

    @property
    def upper(self) -> Path:
        """The writable layer: what the container changed, in overlay format."""
        return Path(self.data.upper_dir)

    @property
    def merged(self) -> Path:
        """Where the overlay is mounted: the container's root filesystem."""
        return Path(self.data.merged_dir)


class Store:
    """Layers and containers under one `conformance-*` directory (made when missing)."""

    def __init__(self, root: str | os.PathLike[str], *, faults: frozenset[str] = frozenset(),
                 options: ApplyOptions | None = None) -> None:
        self.root = Path(root).absolute()
        if not self.root.name.startswith(PREFIX):
            raise StoreError(f"{self.root}: a store's directory is named {PREFIX}* (so `conformance clean` finds it)")
        unknown = faults - FAULTS
        if unknown:
            raise StoreError(f"unknown store faults {sorted(unknown)}; known: {sorted(FAULTS)}")
        self.faults = faults
        self.options = options or ApplyOptions()
        (self.root / "layers").mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.root / "containers").mkdir(exist_ok=True, mode=0o700)

    # Layers

    def unpack(self, layout: Layout | str | os.PathLike[str], ref: str | None = None) -> StoredImage:
        """Unpack every layer of `ref` not already here; layers already here (same ChainID) are shared."""
        layout = layout if isinstance(layout, Layout) else Layout(layout)
        descriptor, manifest, config = layout.image(ref)
        stored: list[StoredLayer] = []
        for n, layer in enumerate(manifest.layers):
            chain = chain_id(list(config.diff_ids[:n + 1]))
            home = self.root / "layers" / parse_digest(chain)[1]
            diff = home / "diff"
            if not (home / "committed").exists():
                self._unpack_layer(layout, layer, chain, config.diff_ids[n], [s.path for s in reversed(stored)],
                                   home)
            stored.append(StoredLayer(chain, config.diff_ids[n], layer.digest, diff))
        image = StoredImage(descriptor.digest, tuple(stored))
        _write_json(self.root / "images" / f"{parse_digest(descriptor.digest)[1]}.json", _image_json(image))
        return image

    def _unpack_layer(self, layout: Layout, descriptor: Descriptor, chain: str, diff_id: str,
                      lowers: Sequence[Path], home: Path) -> None:
        """Apply into a fresh directory beside `home` and rename it into place once it is complete."""
        temp = home.with_name(f".{home.name}.unpacking")
        for stale in (temp, home):  # what an interrupted unpack left
            if stale.exists():
                shutil.rmtree(stale)
        diff = temp / "diff"
        diff.mkdir(parents=True, mode=0o755)
        try:
            with layout.open_blob(descriptor) as reader:
                apply_layer(diff, reader, media_type=descriptor.media_type, options=self.options,
                            label=descriptor.short(), expected_diff_id=diff_id)
                reader.drain()
            marks = _read_marks(layout, descriptor, self.options)
            _to_overlay_format(diff, marks, lowers, self.faults)
            _write_json(temp / "layer.json", {"chain_id": chain, "diff_id": diff_id, "digest": descriptor.digest})
            (temp / "committed").write_text(chain + "\n", encoding="utf-8")
            os.rename(temp, home)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise

    def image(self, manifest: str) -> StoredImage:
        """An image unpacked earlier, by its manifest digest."""
        where = self.root / "images" / f"{parse_digest(manifest)[1]}.json"
        try:
            doc = json.loads(where.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(f"image {manifest} is not unpacked in {self.root}") from None
        return StoredImage(doc["manifest"], tuple(StoredLayer(one["chain_id"], one["diff_id"], one["digest"],
                                                              Path(one["path"])) for one in doc["layers"]))

    # Containers

    def create_container(self, image: StoredImage, name: str) -> Container:
        """Make the container's upper, work and merged directories; an existing one is returned as it is."""
        path = self._container_path(name)
        if (path / "config.json").exists():
            return self.container(name)
        for sub in ("upper", "work", "merged"):
            (path / sub).mkdir(parents=True, exist_ok=True, mode=0o755)
        lowers = [str(layer.path) for layer in reversed(image.layers)]  # overlayfs: the first lowerdir is on top
        if "lowers-bottom-first" in self.faults:  # FAULT: the base layer on top
            lowers.reverse()
        if not lowers:  # an image with no layers: overlayfs wants at least one lower
            empty = self.root / "layers" / "empty"
            empty.mkdir(exist_ok=True, mode=0o755)
            lowers = [str(empty)]
        data = GraphDriverData(":".join(lowers), str(path / "upper"), str(path / "work"), str(path / "merged"))
        _write_json(path / "config.json", {"name": name, "image": image.manifest, **data.to_json()})
        return Container(name, path, data)

    def container(self, name: str) -> Container:
        """A container created earlier."""
        path = self._container_path(name)
        try:
            doc = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(f"no container {name!r} in {self.root}") from None
        data = doc["Data"]
        return Container(name, path, GraphDriverData(data["LowerDir"], data["UpperDir"], data["WorkDir"],
                                                     data["MergedDir"]))

    def containers(self) -> list[str]:
        """The names of the containers in the store."""
        return sorted(p.name for p in (self.root / "containers").iterdir() if (p / "config.json").exists())

    def _container_path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise StoreError(f"container name {name!r}: letters, digits, '_', '.', '-' (64 at most), not first")
        return self.root / "containers" / name

    # Mounting

    def mount(self, container: Container) -> Path:
        """Mount the container's overlay on its merged directory; returns that directory."""
        options = container.data.mount_options()
        if len(options) >= os.sysconf("SC_PAGE_SIZE"):  # mount(2) copies one page of data
            raise StoreError(f"overlay mount options are {len(options)} bytes, over one page: too many layers "
                             "for absolute paths")
        if os.path.ismount(container.merged):
            return container.merged
        _mount("overlay", str(container.merged), "overlay", options)
        return container.merged

    def umount(self, container: Container) -> None:
        """Unmount the container's overlay if it is mounted (lazily when it is busy)."""
        if os.path.ismount(container.merged):
            _umount(str(container.merged))

    def mounts(self) -> list[str]:
        """Mount points under the store's root, deepest first (from /proc/self/mountinfo)."""
        found = []
        root = str(self.root)
        for target in _mount_points():
            if target == root or target.startswith(root + "/"):
                found.append(target)
        return sorted(found, key=lambda t: t.count("/"), reverse=True)

    def remove(self) -> None:
        """Unmount everything under the root, then delete it; a mount that stays is an error, not a rmtree."""
        for target in self.mounts():
            _umount(target)
        left = self.mounts()
        if left:
            raise StoreError(f"still mounted, not removing {self.root}: {left}")
        if self.root.exists():
            shutil.rmtree(self.root)


# Turning an applied layer into overlay format -----------------------------------------------------------


@dataclass
class _Marks:
    """What the second pass over a layer's names found: whiteouts, opaque markers, listed directories."""

    whiteouts: list[tuple[tuple[str, ...], str]]
    opaques: list[tuple[str, ...]]
    listed: set[tuple[str, ...]]


def _read_marks(layout: Layout, descriptor: Descriptor, options: ApplyOptions) -> _Marks:
    """Read the layer's entry names once more; apply_layer consumed the whiteouts without a trace."""
    marks = _Marks([], [], set())
    label = descriptor.short()
    with layout.open_blob(descriptor) as reader:
        stream = TarStream(reader, layer_compression(descriptor.media_type), options.max_bytes, label)
        try:
            for _tar, member in read_members(stream, label=label, max_metadata=options.max_metadata):
                parts = clean_name(member.name)  # apply_layer refused unsafe names already
                if not parts:
                    continue
                if parts[-1] == OPAQUE:
                    marks.opaques.append(parts[:-1])
                elif parts[-1].startswith(WHITEOUT):
                    marks.whiteouts.append((parts[:-1], parts[-1][len(WHITEOUT):]))
                elif member.isdir():
                    marks.listed.add(parts)
            stream.drain()
        finally:
            stream.close()  # a zstd decoder holds a process
        reader.drain()
    return marks


def _to_overlay_format(diff: Path, marks: _Marks, lowers: Sequence[Path], faults: frozenset[str]) -> None:
    """Whiteouts become 0/0 devices, opaque markers an xattr; implied directories take their lower's attributes."""
    as_files = "whiteouts-as-files" in faults
    touched: dict[tuple[str, ...], tuple[int, int]] = {}  # listed directories whose mtime a mark changes
    root = os.open(diff, _DIR_FLAGS)
    try:
        # Directories this layer makes opaque, by a marker or by a whiteout of a directory it adds again.
        opaque_here = {tuple(d) for d in marks.opaques} | {
            (*parent, name) for parent, name in marks.whiteouts if os.path.isdir(diff.joinpath(*parent, name))
            and not os.path.islink(diff.joinpath(*parent, name))}
        for parent, name in marks.whiteouts:
            inside_opaque = any(parent[:depth] in opaque_here for depth in range(1, len(parent) + 1))
            if not as_files and (inside_opaque or not _visible_below(lowers, (*parent, name))):
                # Nothing below to hide. A 0/0 device there would not be hidden itself: overlayfs lists
                # it in readdir of a directory no lower layer shares, then fails to look it up (umoci
                # drops these too). And making its parent would add a directory no layer holds.
                continue
            with _opened(root, parent, create=True) as fd:
                if fd is None:  # under a symlink or a file of this layer: that entry hides the lower path already
                    continue
                _remember_time(fd, parent, marks.listed, touched)
                if as_files:  # FAULT: the OCI marker stays a plain file
                    _plain_file(fd, WHITEOUT + name)
                    continue
                existing = _lstat_at(fd, name)
                if existing is None:
                    _whiteout_device(fd, name, parent)
                elif stat.S_ISDIR(existing.st_mode):  # `rm -rf d; mkdir d` in one layer: d must hide lower d's children
                    _set_opaque(fd, name, (*parent, name))
                # a non-directory the layer adds again already hides the lower one
        for directory in marks.opaques:
            with _opened(root, directory, create=True) as fd:
                if fd is None:
                    continue
                if as_files:  # FAULT
                    _remember_time(fd, directory, marks.listed, touched)
                    _plain_file(fd, OPAQUE)
                else:
                    os.setxattr(fd, OPAQUE_XATTR, b"y")
        _implied_directories(root, diff, marks.listed, lowers)
        for parts, times in touched.items():
            with _opened(root, parts, create=False) as fd:
                if fd is not None:
                    os.utime(fd, ns=times)
    finally:
        os.close(root)


def _visible_below(lowers: Sequence[Path], parts: tuple[str, ...]) -> bool:
    """Whether the lower layers (top first, in overlay format) together show `parts`."""
    for lower in lowers:
        for depth in range(1, len(parts)):
            ancestor = lower.joinpath(*parts[:depth])
            info = _lstat_path(ancestor)
            if info is not None and not stat.S_ISDIR(info.st_mode):
                return False  # a file, symlink or whiteout above it hides it in this layer and all below
        info = _lstat_path(lower.joinpath(*parts))
        if info is not None:
            return not (stat.S_ISCHR(info.st_mode) and info.st_rdev == 0)
        for depth in range(1, len(parts)):
            with contextlib.suppress(OSError):
                if os.getxattr(lower.joinpath(*parts[:depth]), OPAQUE_XATTR, follow_symlinks=False) == b"y":
                    return False  # an opaque directory: the layers below do not show through
    return False


def _lstat_path(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _remember_time(fd: int, parts: tuple[str, ...], listed: set[tuple[str, ...]],
                   touched: dict[tuple[str, ...], tuple[int, int]]) -> None:
    if (parts in listed or not parts) and parts not in touched:
        info = os.fstat(fd)
        touched[parts] = (info.st_atime_ns, info.st_mtime_ns)


def _whiteout_device(fd: int, name: str, parent: tuple[str, ...]) -> None:
    try:
        os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=fd)  # mode 0, as the kernel makes them
    except PermissionError:
        raise StoreError(f"whiteout {'/'.join((*parent, name))}: mknod of a 0/0 device needs root "
                         "(CAP_MKNOD)") from None


def _set_opaque(fd: int, name: str, parts: tuple[str, ...]) -> None:
    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
    try:
        os.setxattr(child, OPAQUE_XATTR, b"y")
    except PermissionError:
        raise StoreError(f"{'/'.join(parts)}: {OPAQUE_XATTR} needs root (CAP_SYS_ADMIN)") from None
    finally:
        os.close(child)


def _plain_file(fd: int, name: str) -> None:
    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd))


def _implied_directories(root: int, diff: Path, listed: set[tuple[str, ...]], lowers: Sequence[Path]) -> None:
    """A directory the layer did not list takes mode, owner and mtime from the topmost lower that has it.

    In an overlay the upper directory's attributes are the ones seen, so an implied `etc` made 0755
    here would otherwise change the mode of the image's `etc`. Deepest first, so setting a child's
    attributes cannot disturb its parent's restored mtime.
    """
    implied: list[tuple[str, ...]] = []
    for dirpath, dirnames, _files in os.walk(diff):  # os.walk does not follow symlinks
        base = Path(dirpath).relative_to(diff).parts
        implied.extend((*base, name) for name in dirnames if (*base, name) not in listed)
    for parts in sorted(implied, key=len, reverse=True):
        lower = _lower_directory(parts, lowers)
        if lower is None:
            continue
        with _opened(root, parts, create=False) as fd:
            if fd is None:
                continue
            if os.geteuid() == 0:
                os.fchown(fd, lower.st_uid, lower.st_gid)
            os.fchmod(fd, stat.S_IMODE(lower.st_mode))
            os.utime(fd, ns=(lower.st_atime_ns, lower.st_mtime_ns))


def _lower_directory(parts: tuple[str, ...], lowers: Sequence[Path]) -> os.stat_result | None:
    for lower in lowers:  # top first
        top = os.open(lower, _DIR_FLAGS)
        try:
            with _opened(top, parts, create=False) as fd:
                if fd is not None:
                    return os.fstat(fd)
            if _exists_at(top, parts):  # something else is there: it hides what is below
                return None
        finally:
            os.close(top)
    return None


def _exists_at(top: int, parts: tuple[str, ...]) -> bool:
    with _opened(top, parts[:-1], create=False) as fd:
        return fd is not None and _lstat_at(fd, parts[-1]) is not None


@contextmanager
def _opened(root: int, parts: Sequence[str], *, create: bool) -> Iterator[int | None]:
    """An fd of the directory `parts` under `root`, or None when that is not a plain directory path.

    Walked without following symlinks, so no layer entry can lead outside; missing directories are
    made 0755 when `create` is true.
    """
    fd = os.dup(root)
    try:
        for component in parts:
            try:
                child = os.open(component, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    child = -1
                else:
                    os.mkdir(component, 0o755, dir_fd=fd)
                    child = os.open(component, _DIR_FLAGS, dir_fd=fd)
            except (NotADirectoryError, OSError) as err:
                if isinstance(err, NotADirectoryError) or err.errno == errno.ELOOP:
                    child = -1
                else:
                    raise
            os.close(fd)
            fd = child
            if fd < 0:
                break
        yield fd if fd >= 0 else None
    finally:
        if fd >= 0:
            os.close(fd)


def _lstat_at(fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _image_json(image: StoredImage) -> dict[str, object]:
    return {"manifest": image.manifest, "layers": [{"chain_id": one.chain_id, "diff_id": one.diff_id,
                                                    "digest": one.digest, "path": str(one.path)}
                                                   for one in image.layers]}


def _write_json(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temp, path)


# mount(2) and umount2(2) -----------------------------------------------------------------------------


def _mount(source: str, target: str, fstype: str, data: str) -> None:
    """mount(2) of the container's overlay, with a hint for the usual failures."""
    try:
        nsapi.mount(source, target, fstype, 0, data)
    except OSError as exc:
        err = exc.errno or 0
        hint = {errno.EPERM: " (needs root: CAP_SYS_ADMIN)", errno.ENODEV: " (no overlay filesystem: modprobe overlay)",
                errno.EINVAL: " (an upper/work on a filesystem overlay cannot use, or a bad lowerdir)"}.get(err, "")
        raise StoreError(f"mount overlay on {target}: {os.strerror(err)}{hint}") from None


def _umount(target: str) -> None:
    """Unmount; lazily when busy; nothing when it is not a mount point (any more)."""
    for flags in (0, nsapi.MNT_DETACH):
        try:
            nsapi.umount(target, flags)
            return
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return
            if exc.errno != errno.EBUSY or flags:
                raise StoreError(f"umount {target}: {os.strerror(exc.errno or 0)}") from None


def _mount_points() -> Iterator[str]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split(" ")
            if len(fields) > 4:
                yield re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])


