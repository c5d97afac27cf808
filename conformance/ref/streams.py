"""Byte streams that check what they carry: blobs against their descriptors, layers against limits.

A blob is read once, in 1 MiB pieces, and its size and digest are checked against its descriptor as it
goes (image-spec descriptor.md: content whose length differs from `size` SHOULD NOT be trusted;
implementations MUST verify SHA-256). A layer's tar is then decompressed (gzip only: the standard
library has no zstd before 3.14), hashed for its DiffID and bounded, so a small blob that expands
without end (Docker CVE-2017-14992) stops with a LimitError instead of filling the disk or memory.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from typing import Protocol

from conformance.ref.digest import new_hash
from conformance.ref.errors import LayerError, LayoutError, LimitError

CHUNK = 1 << 20


class Readable(Protocol):
    """What these streams read from and offer: `read(n)`, the part of a file tarfile and gzip need."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes; b"" at the end."""
        ...


class VerifiedReader:
    """Reads a blob and proves, by the time it returns b"", that its size and digest are the descriptor's.

    The size is checked while reading (no more than `size` bytes are ever handed out, and one byte
    too many is an error at once); the digest at the end. Callers must read to the end (`drain`)
    before trusting anything derived from the content.
    """

    def __init__(self, raw: Readable, digest: str, size: int, *, check_digest: bool = True) -> None:
        self._raw = raw
        self._check_digest = check_digest  # False only in a deliberately faulty variant
        self._digest = digest
        self._size = size
        self._hash = new_hash(digest)
        self.seen = 0
        self.verified = False

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes of the blob, checked as described above."""
        want = CHUNK if size is None or size < 0 else size
        if want == 0:
            return b""
        left = self._size - self.seen
        if left <= 0:
            self._check_end()
            return b""
        data = self._raw.read(min(want, left))
        if not data:
            raise LayoutError(f"blob {self._digest}: {self.seen} bytes, shorter than the descriptor's size "
                              f"{self._size}")
        self.seen += len(data)
        self._hash.update(data)
        if self.seen == self._size:
            self._check_end()
        return data

    def _check_end(self) -> None:
        if self.verified:
            return
        if self._raw.read(1):
            raise LayoutError(f"blob {self._digest}: longer than the descriptor's size {self._size}")
        actual = f"{self._hash.name}:{self._hash.hexdigest()}"
        if actual != self._digest and self._check_digest:
            raise LayoutError(f"blob {self._digest}: content digest is {actual} (wrong digest or corrupt blob)")
        self.verified = True

    def drain(self) -> None:
        """Read what is left so the size and digest are checked."""
        while self.read(CHUNK):
            pass
        self._check_end()


class GzipStream:
    """A gzip member sequence decoded piecewise (gzip.GzipFile bounds each step's output).

    Truncation and garbage are errors that say so; trailing NUL padding is accepted (GzipFile does, as
    does gzip(1)).
    """

    def __init__(self, raw: Readable, label: str) -> None:
        # GzipFile's fileobj type asks for seek(), which it calls only to rewind; this never rewinds.
        self._file: gzip.GzipFile = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[call-overload]
        self._label = label

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` decompressed bytes."""
        try:
            return self._file.read(CHUNK if size is None or size < 0 else size)
        except EOFError as err:
            raise LayerError(f"truncated gzip stream ({err})", layer=self._label) from None
        except (gzip.BadGzipFile, zlib.error) as err:
            raise LayerError(f"corrupt gzip stream ({err})", layer=self._label) from None


class TarStream:
    """The uncompressed tar bytes of one layer: counted against `max_bytes` and hashed for the DiffID.

    `metadata_budget` lets the tar reader bound what a single header may pull in (a PAX record or GNU
    long name claiming gigabytes is read into memory whole by tarfile).
    """

    def __init__(self, raw: Readable, compression: str, max_bytes: int, label: str) -> None:
        if compression == "gzip":
            self._source: Readable = GzipStream(raw, label)
        elif compression == "none":
            self._source = raw
        else:
            raise LayerError(f"unsupported compression {compression!r}", layer=label)
        self._max_bytes = max_bytes
        self._label = label
        self._hash = hashlib.sha256()
        self.size = 0
        self.metadata_budget: int | None = None

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes of tar, within the limits."""
        data = self._source.read(CHUNK if size is None or size < 0 else size)
        if not data:
            return data
        self.size += len(data)
        if self.size > self._max_bytes:
            raise LimitError(f"uncompressed layer passes the limit of {self._max_bytes} bytes (a decompression "
                             "bomb?)", layer=self._label)
        if self.metadata_budget is not None:
            self.metadata_budget -= len(data)
            if self.metadata_budget < 0:
                raise LimitError("one tar header's metadata (PAX records, long names) is too large",
                                 layer=self._label)
        self._hash.update(data)
        return data

    def drain(self) -> None:
        """Read the rest (the end-of-archive padding, trailing bytes) so the DiffID covers every byte."""
        while self.read(CHUNK):
            pass

    def diff_id(self) -> str:
        """`sha256:` of every uncompressed byte read so far; call `drain` first."""
        return f"sha256:{self._hash.hexdigest()}"


class HashingReader:
    """Passes bytes through, hashing and counting them: a layer blob's digest as it was given."""

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes of the underlying stream."""
        data = self._raw.read(CHUNK if size is None or size < 0 else size)
        self._hash.update(data)
        self.size += len(data)
        return data

    def digest(self) -> str:
        """`sha256:` of everything read so far."""
        return f"sha256:{self._hash.hexdigest()}"
