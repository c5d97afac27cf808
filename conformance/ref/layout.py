"""An OCI image layout on disk: `oci-layout`, `index.json` and `blobs/<alg>/<encoded>` (image-layout.md).

Reading never trusts a blob: every read goes through a VerifiedReader, so a wrong digest, a wrong
size or a missing file is a LayoutError naming the blob, and nothing derived from unverified bytes
is returned. Writing is content-addressed and atomic (a blob appears under its name only once it is
complete), and deterministic (canonical JSON, gzip without timestamps).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import platform
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from conformance.ref.digest import parse_digest
from conformance.ref.errors import LayoutError
from conformance.ref.oci import (
    COMPRESSED_LAYER,
    CONFIG,
    CONFIG_TYPES,
    INDEX_TYPES,
    MANIFEST,
    MANIFEST_TYPES,
    REF_NAME,
    Descriptor,
    History,
    ImageConfig,
    Index,
    Manifest,
    config_document,
    dumps_canonical,
    loads_strict,
)
from conformance.ref.streams import CHUNK, Readable, VerifiedReader, zstd_compress

LAYOUT_VERSION = "1.0.0"

#: Manifests, indexes and configs are read into memory; containerd caps manifests at 4 MiB, configs
#: with long histories can be larger. A descriptor claiming more is refused before reading.
MAX_DOCUMENT = 16 << 20

#: GOARCH names for platform.machine(), so a multi-platform index can pick this host's manifest.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
           "riscv64": "riscv64", "i686": "386"}


def host_architecture() -> str:
    """The architecture of this machine as OCI platforms spell it (GOARCH)."""
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


def write_layout(path: str | os.PathLike[str], manifests: Sequence[Descriptor]) -> None:
    """Write `oci-layout` and an `index.json` listing `manifests` (their blobs must be in `blobs/`)."""
    root = Path(path)
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    _write_atomic(root / "oci-layout", dumps_canonical({"imageLayoutVersion": LAYOUT_VERSION}))
    _write_atomic(root / "index.json", dumps_canonical(Index(tuple(manifests)).to_json()))


def _write_atomic(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".conformance-tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


class Layout:
    """One image layout directory, checked on open: `oci-layout` version, `blobs/`, `index.json`."""

    def __init__(self, path: str | os.PathLike[str], *, faults: frozenset[str] = frozenset()) -> None:
        self.path = Path(path)
        self.faults = faults  # deliberately wrong behaviours for the suite's own tests (see ApplyOptions)
        if "skip-layout-check" in faults:  # FAULT: any directory is taken for a layout
            return
        marker = self.path / "oci-layout"
        try:
            data = marker.read_bytes()
        except OSError as err:
            raise LayoutError(f"{self.path}: not an OCI image layout: oci-layout: {err.strerror}") from None
        doc = loads_strict(data, f"{marker}")
        version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
        if version != LAYOUT_VERSION:
            raise LayoutError(f"{marker}: imageLayoutVersion {version!r} is not supported (expected "
                              f"{LAYOUT_VERSION!r})")
        if not (self.path / "blobs").is_dir():
            raise LayoutError(f"{self.path}: no blobs/ directory (image-layout.md: it MUST exist)")

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> Layout:
        """An empty layout at `path` (made if needed), or the one already there."""
        root = Path(path)
        if not (root / "oci-layout").exists():
            root.mkdir(parents=True, exist_ok=True)
            write_layout(root, [])
        return cls(root)

    # Reading

    def index(self) -> Index:
        """The top-level index.json."""
        where = self.path / "index.json"
        try:
            data = where.read_bytes()
        except OSError as err:
            raise LayoutError(f"{where}: {err.strerror}") from None
        return Index.from_json(loads_strict(data, str(where)), str(where))

    def blob_path(self, digest: str) -> Path:
        """Where a blob lives; the digest is checked first, as it becomes part of a path (H-23)."""
        algorithm, encoded = parse_digest(digest)
        return self.path / "blobs" / algorithm / encoded

    @contextlib.contextmanager
    def open_blob(self, descriptor: Descriptor) -> Iterator[VerifiedReader]:
        """A reader of the blob that checks size and digest as it goes; read it to the end."""
        where = self.blob_path(descriptor.digest)
        try:
            fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise LayoutError(f"blob {descriptor.digest}: missing from the layout ({where})") from None
        except OSError as err:
            hint = " (a symlink)" if err.errno == errno.ELOOP else ""
            raise LayoutError(f"blob {descriptor.digest}: cannot open {where}{hint}: {err.strerror}") from None
        with os.fdopen(fd, "rb", buffering=0) as raw:
            size = os.fstat(fd).st_size if "skip-size-check" in self.faults else descriptor.size  # FAULT
            yield VerifiedReader(raw, descriptor.digest, size, check_digest="skip-digest-check" not in self.faults)

    def read_blob(self, descriptor: Descriptor, limit: int = MAX_DOCUMENT) -> bytes:
        """The whole verified blob, for documents; the size is checked against `limit` before reading."""
        if descriptor.size > limit:
            raise LayoutError(f"blob {descriptor.digest}: size {descriptor.size} is over the {limit}-byte limit for "
                              "a document")
        with self.open_blob(descriptor) as reader:
            parts = []
            while chunk := reader.read(CHUNK):
                parts.append(chunk)
            reader.drain()
        return b"".join(parts)

    def verify_blob(self, descriptor: Descriptor) -> None:
        """Read a blob to the end, checking its size and digest."""
        with self.open_blob(descriptor) as reader:
            reader.drain()

    def read_json(self, descriptor: Descriptor, what: str) -> Any:
        """A verified blob parsed as strict JSON."""
        return loads_strict(self.read_blob(descriptor), f"{what} {descriptor.digest}")

    def resolve(self, ref: str | None = None) -> Descriptor:
        """The manifest descriptor for `ref` (its ref.name annotation), or the only one when ref is None.

        A multi-platform index is followed to this host's linux manifest.
        """
        manifests = self.index().manifests
        if ref is None:
            found = list(manifests)
            if len(found) != 1:
                names = sorted(filter(None, (m.ref_name for m in manifests)))
                raise LayoutError(f"{self.path}: {len(found)} manifests in index.json; name one of {names}")
        else:
            found = [m for m in manifests if m.ref_name == ref]
            if not found:
                raise LayoutError(f"{self.path}: no manifest named {ref!r} in index.json")
            if len(found) > 1:
                raise LayoutError(f"{self.path}: {len(found)} manifests named {ref!r} in index.json")
        return self._platform_manifest(found[0], depth=0)

    def _platform_manifest(self, descriptor: Descriptor, depth: int) -> Descriptor:
        if descriptor.media_type in MANIFEST_TYPES:
            return descriptor
        if descriptor.media_type not in INDEX_TYPES or depth > 4:
            raise LayoutError(f"blob {descriptor.digest}: mediaType {descriptor.media_type!r} is not an image")
        index = Index.from_json(self.read_json(descriptor, "index"), f"index {descriptor.digest}")
        arch = host_architecture()
        here = [m for m in index.manifests if (m.platform or {}).get("os") == "linux"
                and (m.platform or {}).get("architecture") == arch]
        if len(here) != 1:
            raise LayoutError(f"index {descriptor.digest}: {len(here)} manifests for linux/{arch}")
        return self._platform_manifest(here[0], depth + 1)

    def manifest(self, descriptor: Descriptor) -> Manifest:
        """A verified, parsed manifest; its own mediaType must agree with the descriptor's (H-25)."""
        what = f"manifest {descriptor.digest}"
        doc = self.read_json(descriptor, "manifest")
        manifest = Manifest.from_json(doc, what)
        if isinstance(doc, dict) and doc.get("mediaType") not in (None, descriptor.media_type):
            raise LayoutError(f"{what}: mediaType {doc.get('mediaType')!r} differs from its descriptor's "
                              f"{descriptor.media_type!r}")
        return manifest

    def config(self, manifest: Manifest) -> ImageConfig:
        """The verified image config; an unknown config mediaType is not parsed (manifest.md MUST NOT)."""
        if manifest.config.media_type not in CONFIG_TYPES:
            raise LayoutError(f"config {manifest.config.digest}: mediaType {manifest.config.media_type!r} is not an "
                              "image config (not parsed)")
        return ImageConfig.from_json(self.read_json(manifest.config, "config"), f"config {manifest.config.digest}",
                                     check_type="skip-rootfs-type-check" not in self.faults)  # FAULT point

    def image(self, ref: str | None = None) -> tuple[Descriptor, Manifest, ImageConfig]:
        """The manifest descriptor, manifest and config of `ref`, checked to pair layers with DiffIDs."""
        descriptor = self.resolve(ref)
        manifest = self.manifest(descriptor)
        config = self.config(manifest)
        if len(config.diff_ids) != len(manifest.layers):
            raise LayoutError(f"manifest {descriptor.digest}: {len(manifest.layers)} layers but the config has "
                              f"{len(config.diff_ids)} diff_ids")
        return descriptor, manifest, config

    # Writing

    def add_blob(self, content: bytes | Readable, media_type: str,
                 annotations: Mapping[str, str] | None = None) -> Descriptor:
        """Store bytes or a stream as a sha256 blob; returns its descriptor (already there is fine)."""
        directory = self.path / "blobs" / "sha256"
        directory.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".conformance-tmp-")
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in _chunks(content):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            os.chmod(temp, 0o644)
            os.replace(temp, directory / digest.hexdigest())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        return Descriptor(media_type, f"sha256:{digest.hexdigest()}", size, dict(annotations or {}))

    def add_json(self, doc: Any, media_type: str) -> Descriptor:
        """Store a document as canonical JSON."""
        return self.add_blob(dumps_canonical(doc), media_type)

    def add_layer(self, tar: bytes, *, compress: bool = False,
                  compression: str | None = None) -> tuple[Descriptor, str]:
        """Store an uncompressed layer tar, compressed as asked; returns (descriptor, DiffID).

        `compression` is "none", "gzip" or "zstd"; without it, `compress` means gzip. gzip is written
        with mtime 0 and no file name, zstd as one frame with content size and checksum, so the blob
        digest is reproducible.
        """
        diff = f"sha256:{hashlib.sha256(tar).hexdigest()}"
        chosen = compression or ("gzip" if compress else "none")
        if chosen == "gzip":
            blob = gzip.compress(tar, compresslevel=6, mtime=0)
        elif chosen == "zstd":
            blob = zstd_compress(tar)
        elif chosen == "none":
            blob = tar
        else:
            raise ValueError(f"compression {chosen!r} is not one of {sorted(COMPRESSED_LAYER)}")
        return self.add_blob(blob, COMPRESSED_LAYER[chosen]), diff

    def add_image(self, ref: str | None, layers: Sequence[tuple[Descriptor, str]], *,
                  history: Sequence[History] = (), config: Mapping[str, Any] | None = None,
                  architecture: str | None = None) -> Descriptor:
        """Write config and manifest for `layers` ((descriptor, DiffID) pairs, base first) and list it.

        With a `ref`, the manifest is named by the ref.name annotation, replacing one of that name.
        """
        document = config_document([diff for _, diff in layers], history,
                                   architecture=architecture or host_architecture(), config=config)
        config_descriptor = self.add_json(document, CONFIG)
        manifest = Manifest(config_descriptor, tuple(layer for layer, _ in layers))
        descriptor = self.add_json(manifest.to_json(), MANIFEST)
        if ref is not None:
            descriptor = Descriptor(descriptor.media_type, descriptor.digest, descriptor.size, {REF_NAME: ref})
        kept = [m for m in self.index().manifests if ref is None or m.ref_name != ref]
        write_layout(self.path, [*kept, descriptor])
        return descriptor


def _chunks(content: bytes | Readable) -> Iterator[bytes]:
    if isinstance(content, (bytes, bytearray, memoryview)):
        yield bytes(content)
        return
    while chunk := content.read(CHUNK):
        yield chunk
