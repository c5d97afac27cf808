"""Byte streams that check what they carry: blobs against their descriptors, layers against limits.

A blob is read once, in 1 MiB pieces, and its size and digest are checked against its descriptor as it
goes (image-spec descriptor.md: content whose length differs from `size` SHOULD NOT be trusted;
implementations MUST verify SHA-256). A layer's tar is then decompressed (gzip with the standard library;
zstd with the `zstandard` module or the `zstd` program, see ZstdStream), hashed for its DiffID and
bounded, so a small blob that expands without end (Docker CVE-2017-14992) stops with a LimitError
instead of filling the disk or memory: every decoder hands out at most the asked-for bytes per read.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import queue
import shutil
import subprocess
import threading
import weakref
import zlib
from typing import Any, Protocol

from conformance.ref.digest import new_hash
from conformance.ref.errors import LayerError, LayoutError, LimitError

CHUNK = 1 << 20


class Readable(Protocol):
    """What these streams read from and offer: `read(n)`, the part of a file tarfile and gzip need."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes; b"" at the end."""
        ...


class BackgroundHash:
    """A hashlib hash fed on a worker thread, so hashing overlaps decompressing and writing files.

    hashlib lets go of the GIL while it hashes more than 2 KiB, and sha256 of a 200 MB layer costs
    about as much as extracting it onto a tmpfs; on the caller's thread the two add up. Chunks are
    handed over by reference (bytes do not change) through a bounded queue, so at most QUEUED chunks
    wait in memory. `hexdigest` waits for the queue to empty; `close` (or dropping the object) ends
    the thread.
    """

    QUEUED = 8

    def __init__(self, hasher: Any) -> None:
        self._hash = hasher
        self.name: str = hasher.name
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=self.QUEUED)
        self._thread: threading.Thread | None = None
        self._finalizer: weakref.finalize[Any, BackgroundHash] | None = None

    def update(self, data: bytes) -> None:
        """Hash `data` after everything given before."""
        if self._thread is None:
            self._thread = threading.Thread(target=_hash_worker, args=(self._hash, self._queue),
                                            name="conformance-hash", daemon=True)
            self._thread.start()
            self._finalizer = weakref.finalize(self, self._queue.put, None)
        self._queue.put(data)

    def hexdigest(self) -> str:
        """The hex digest of everything given so far."""
        self.close()
        return str(self._hash.hexdigest())

    def close(self) -> None:
        """Wait for the worker to hash what it was given, and end it (a later update starts another)."""
        if self._thread is not None and self._finalizer is not None:
            self._finalizer()
            self._thread.join()
            self._thread = None


def _hash_worker(hasher: Any, chunks: queue.Queue[bytes | None]) -> None:
    while (data := chunks.get()) is not None:
        hasher.update(data)


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


ZSTD_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+zstd"

#: What to install when neither zstd decoder is there (Debian/Ubuntu package names).
ZSTD_HINT = "install python3-zstandard (the zstandard module) or zstd (the zstd program)"

_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE = 0x184D2A50  # ... to 0x184D2A5F: skippable frames (RFC 8878 § 3.1.2)


def zstd_module() -> Any | None:
    """The `zstandard` module, or None where it is not installed (it is optional: imported lazily)."""
    try:
        import zstandard  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415 (optional, lazily)
    except ImportError:
        return None
    return zstandard


def zstd_program() -> str | None:
    """The path of the `zstd` program, or None."""
    return shutil.which("zstd")


class ZstdFrames:
    """Walks zstd frame boundaries in the compressed bytes (RFC 8878 § 3.1), to tell a whole stream from a cut one.

    zstandard's stream_reader, the only bounded way to decode with it (its decompressobj returns all
    of one input's output at once, and a few bytes of zstd can expand to gigabytes), returns b"" when
    its input ends in the middle of a frame instead of raising. This reads only frame and block
    headers (one per 128 KiB block at most), skipping block contents, so it costs next to nothing.
    """

    def __init__(self) -> None:
        self._need = 4  # bytes of the header being gathered
        self._state = "magic"
        self._header = b""
        self._skip = 0
        self._checksum = False
        self.frames = 0
        self.bad = False

    def feed(self, data: bytes) -> None:
        """Account for the next compressed bytes."""
        pos, end = 0, len(data)
        while pos < end and not self.bad:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._need - len(self._header), end - pos)
            self._header += data[pos:pos + take]
            pos += take
            if len(self._header) == self._need:
                header, self._header = self._header, b""
                self._advance(header)

    def _advance(self, header: bytes) -> None:
        state = self._state
        if state == "magic":
            magic = int.from_bytes(header, "little")
            if magic == _ZSTD_MAGIC:
                self._state, self._need = "descriptor", 1
            elif magic & 0xFFFFFFF0 == _ZSTD_SKIPPABLE:
                self._state, self._need = "skippable", 4
            else:
                self.bad = True
        elif state == "skippable":
            self._skip = int.from_bytes(header, "little")
            self._state, self._need = "magic", 4
            self.frames += 1
        elif state == "descriptor":
            fhd = header[0]
            single = (fhd >> 5) & 1
            self._checksum = bool((fhd >> 2) & 1)
            content_size = (single, 2, 4, 8)[fhd >> 6]
            self._skip = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + content_size
            self._state, self._need = "block", 3
        elif state == "block":
            value = int.from_bytes(header, "little")
            kind, size = (value >> 1) & 3, value >> 3
            if kind == 3:
                self.bad = True
                return
            self._skip = 1 if kind == 1 else size
            if value & 1:  # the frame's last block
                self._skip += 4 if self._checksum else 0
                self._state, self._need = "magic", 4
                self.frames += 1

    def complete(self) -> bool:
        """True when the bytes so far are whole frames (at least one), ending on a frame boundary."""
        return not self.bad and self.frames > 0 and self._state == "magic" and not self._header and not self._skip


class _FrameTap:
    """A Readable that shows every compressed byte to a ZstdFrames on its way to the decoder."""

    def __init__(self, raw: Readable, frames: ZstdFrames) -> None:
        self._raw = raw
        self._frames = frames

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` compressed bytes."""
        data = self._raw.read(CHUNK if size is None or size < 0 else size)
        self._frames.feed(data)
        return data


def zstd_compress(data: bytes, *, level: int = 3) -> bytes:
    """One zstd frame of `data` with its content size and checksum (what `zstd -c` writes by default).

    The same bytes give the same frame with the same encoder, so blob digests are reproducible; the
    zstandard module and the zstd program may encode differently.
    """
    module = zstd_module()
    if module is not None:
        return bytes(module.ZstdCompressor(level=level, write_checksum=True, write_content_size=True).compress(data))
    program = zstd_program()
    if program is None:
        raise LayerError(f"writing {ZSTD_MEDIA_TYPE} layers needs a zstd encoder: {ZSTD_HINT}")
    done = subprocess.run([program, "-c", "-q", f"-{level}", f"--stream-size={len(data)}"], input=data,
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise LayerError(f"zstd -c failed: {done.stderr.decode('utf-8', 'replace').strip()}")
    return done.stdout


class ZstdStream:
    """A zstd frame sequence decoded piecewise, with the zstandard module or else the zstd program.

    The module is preferred (no process, no copies through a pipe); Debian ships it as
    python3-zstandard for the system python3, which is what runs the probe. A virtual environment
    without system site packages (the project's .venv, where the tests run) does not see it, and a
    host may lack the package: then `zstd -dc` runs as a filter, fed by a thread and read in bounded
    pieces, and its exit status says whether the stream was whole. Both bound each read to `size`
    bytes, so TarStream's max_bytes stops a bomb (both also refuse windows over 128 MiB by default).
    Truncation and garbage are LayerErrors that say so, as for gzip.
    """

    def __init__(self, raw: Readable, label: str) -> None:
        self._label = label
        self._frames = ZstdFrames()
        self._done = False
        self._pipe: _ZstdPipe | None = None
        module = zstd_module()
        if module is not None:
            self._error: type[Exception] = module.ZstdError
            self._reader = module.ZstdDecompressor().stream_reader(_FrameTap(raw, self._frames),
                                                                   read_size=CHUNK, read_across_frames=True)
            return
        program = zstd_program()
        if program is None:
            raise LayerError(f"{ZSTD_MEDIA_TYPE} layers need a zstd decoder: {ZSTD_HINT}", layer=label)
        self._pipe = _ZstdPipe(program, _FrameTap(raw, self._frames), label, self._frames)

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` decompressed bytes."""
        want = CHUNK if size is None or size < 0 else size
        if self._done or want == 0:
            return b""
        if self._pipe is not None:
            data = self._pipe.read(want)
        else:
            try:
                data = self._reader.read(want)
            except self._error as err:
                raise LayerError(f"corrupt zstd stream ({err})", layer=self._label) from None
            if not data and not self._frames.complete():
                raise LayerError("truncated zstd stream (it ends inside a frame, or has none)", layer=self._label)
        if not data:
            self._done = True
        return data

    def close(self) -> None:
        """Stop the zstd program if one runs (after an error, the stream is not read to its end)."""
        if self._pipe is not None:
            self._pipe.close()


class _ZstdPipe:
    """`zstd -dc` as a filter: a thread writes the compressed blob to its stdin, `read` takes its stdout."""

    def __init__(self, program: str, raw: Readable, label: str, frames: ZstdFrames) -> None:
        self._label = label
        self._raw = raw
        self._frames = frames
        self._failure: BaseException | None = None
        self._process = subprocess.Popen([program, "-dc", "-q"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        assert self._process.stdin is not None and self._process.stdout is not None
        self._out = self._process.stdout.fileno()
        self._feeder = threading.Thread(target=self._feed, name="conformance-zstd-feed", daemon=True)
        self._feeder.start()
        # Whoever drops this stream without reading it to the end must not leave a process behind.
        self._finalizer = weakref.finalize(self, _stop, self._process)

    def _feed(self) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            while chunk := self._raw.read(CHUNK):
                stdin.write(chunk)
        except BrokenPipeError:  # zstd stopped (a corrupt stream): its exit status will say why
            pass
        except BaseException as err:  # a VerifiedReader's LayoutError: re-raised by read()
            self._failure = err
        finally:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()

    def read(self, size: int) -> bytes:
        data = os.read(self._out, size)
        if data:
            return data
        self._feeder.join()
        if self._failure is not None:
            raise self._failure
        stderr = self._process.stderr.read() if self._process.stderr is not None else b""
        status = self._process.wait()
        cut = not self._frames.bad and not self._frames.complete()  # zstd's words for it vary by version
        if status != 0 or cut:
            said = stderr.decode("utf-8", "replace").strip().splitlines()
            reason = said[-1] if said else f"zstd exited with {status}"
            kind = "truncated zstd stream (it ends inside a frame, or has none" if cut else "corrupt zstd stream ("
            raise LayerError(f"{kind}; {reason})" if cut else f"{kind}{reason})", layer=self._label)
        self._finalizer()
        return b""

    def close(self) -> None:
        self._finalizer()
        self._feeder.join()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill and reap a zstd process, closing its pipes."""
    if process.poll() is None:
        process.kill()
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    process.wait()


class TarStream:
    """The uncompressed tar bytes of one layer: counted against `max_bytes` and hashed for the DiffID.

    An uncompressed layer read through a HashingReader is hashed once, not twice: its DiffID is the
    blob's digest, and hashing 200 MB costs as much as writing it to a tmpfs.
    """

    def __init__(self, raw: Readable, compression: str, max_bytes: int, label: str) -> None:
        self._decoder: ZstdStream | None = None
        if compression == "gzip":
            self._source: Readable = GzipStream(raw, label)
        elif compression == "zstd":
            self._decoder = ZstdStream(raw, label)
            self._source = self._decoder
        elif compression == "none":
            self._source = raw
        else:
            raise LayerError(f"unsupported compression {compression!r}", layer=label)
        self._max_bytes = max_bytes
        self._label = label
        self._shared = raw if compression == "none" and isinstance(raw, HashingReader) else None
        self._hash = BackgroundHash(hashlib.sha256())
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes of tar, within the limits."""
        data = self._source.read(CHUNK if size is None or size < 0 else size)
        if not data:
            return data
        self.size += len(data)
        if self.size > self._max_bytes:
            raise LimitError(f"uncompressed layer passes the limit of {self._max_bytes} bytes (a decompression "
                             "bomb?)", layer=self._label)
        if self._shared is None:
            self._hash.update(data)
        return data

    def drain(self) -> None:
        """Read the rest (the end-of-archive padding, trailing bytes) so the DiffID covers every byte."""
        while self.read(CHUNK):
            pass

    def diff_id(self) -> str:
        """`sha256:` of every uncompressed byte read so far; call `drain` first."""
        if self._shared is not None:
            return self._shared.digest()
        return f"sha256:{self._hash.hexdigest()}"

    def close(self) -> None:
        """Release what the decoder holds (a zstd process) and the hash's thread."""
        self._hash.close()
        if self._decoder is not None:
            self._decoder.close()


class HashingReader:
    """Passes bytes through, hashing and counting them: a layer blob's digest as it was given."""

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._hash = BackgroundHash(hashlib.sha256())
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

    def close(self) -> None:
        """End the hashing thread (the digest stays available)."""
        self._hash.close()
