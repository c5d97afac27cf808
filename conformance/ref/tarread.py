"""Reading a layer tar entry by entry: a small ustar/PAX/GNU header parser over a TarStream.

Why not tarfile. It was the first reader here, and it cost more than half of an apply: per entry it
builds a TarInfo through some fifteen nts/nti calls, its stream mode copies what is left of its
buffer on every 512-byte read and seeks by reading, and its data reads go through two file layers
(0.9 s of header parsing alone for a 20k-entry layer that GNU tar extracts in 0.35 s). It also needed
two guards, which this parser makes part of the grammar instead:

1. tarfile takes a corrupt or truncated header after the first one for the end of the archive and
   says nothing, so a layer cut short would apply as if it were whole (H-20). Here a header is an
   entry, a zero block (the end), a clean end of stream right after the last entry's padded data
   (Go's archive/tar accepts that too), or an error that says which and names the entry before it.
2. tarfile reads a PAX record or GNU long name into memory whole, however large its header says it
   is (H-21). Here the size a metadata header claims is checked against `max_metadata` before a
   byte of it is read.

What it reads: POSIX ustar (with its name prefix), pax extended headers (`x`, Solaris `X`) and
global ones (`g`), GNU long names and targets (`L`, `K`), base-256 numbers, both checksum flavours
(unsigned, and the signed one of old Sun tars), v7 directories (a regular file whose name ends in
`/`), and sparse files in the four forms GNU tar writes: old GNU (`S`, with extension blocks) and
PAX 0.0, 0.1 and 1.0 (whose map opens the data). Any other type is handed to the caller (which
refuses it) with its data skipped, as tarfile does. Names are UTF-8 with surrogate escapes for the
bytes that are not, like tarfile's stream default on Linux.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator

from conformance.ref.errors import LayerError, LimitError
from conformance.ref.streams import CHUNK, TarStream

BLOCK = 512
_ZERO = bytes(BLOCK)
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")
_SIGNED = struct.Struct("148b8x356b")

REGULAR_TYPES = frozenset({b"0", b"\0", b"7"})  # 7: "contiguous", a regular file everywhere
#: Types whose header is not followed by data (everything else, unknown types included, is).
_NO_DATA = frozenset({b"1", b"2", b"3", b"4", b"5", b"6"})
_METADATA = frozenset({b"x", b"X", b"g", b"L", b"K"})
_PAX_SPARSE_00 = ("GNU.sparse.offset", "GNU.sparse.numbytes")
_OCTAL_FIELDS = b"01234567 \0"
_NUL_TO_SPACE = bytes.maketrans(b"\0", b" ")


class Member:
    """One entry: the parts of tarfile.TarInfo the applier reads, under the same names."""

    __slots__ = (
        "devmajor",
        "devminor",
        "gid",
        "linkname",
        "mode",
        "mtime",
        "name",
        "pax_headers",
        "size",
        "sparse",
        "stored",
        "type",
        "uid",
    )

    def __init__(self, name: str, linkname: str, kind: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
                 devmajor: int, devminor: int, pax_headers: dict[str, str]) -> None:
        self.name = name
        self.linkname = linkname
        self.type = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size  # the file's size; for a sparse file, with its holes
        self.mtime = mtime
        self.devmajor = devmajor
        self.devminor = devminor
        self.pax_headers = pax_headers
        #: (offset, length) data segments of a sparse file, in order; None for any other entry.
        self.sparse: list[tuple[int, int]] | None = None
        self.stored = 0  # bytes of data that follow the header(s) in the archive

    def isreg(self) -> bool:
        """A regular file (sparse ones included)."""
        return self.type in REGULAR_TYPES or self.sparse is not None

    def isfile(self) -> bool:
        """Tarfile's other name for isreg."""
        return self.isreg()

    def isdir(self) -> bool:
        """A directory."""
        return self.type == b"5"

    def issym(self) -> bool:
        """A symbolic link."""
        return self.type == b"2"

    def islnk(self) -> bool:
        """A hard link to an earlier entry."""
        return self.type == b"1"

    def ischr(self) -> bool:
        """A character device."""
        return self.type == b"3"

    def isblk(self) -> bool:
        """A block device."""
        return self.type == b"4"

    def isfifo(self) -> bool:
        """A fifo."""
        return self.type == b"6"

    def issparse(self) -> bool:
        """A sparse regular file."""
        return self.sparse is not None


class TarReader:
    """Entries of one tar stream, in order, with each entry's data readable until the next entry.

    It reads the stream in CHUNK pieces and hands data out as memoryviews of them: no copies between
    the decompressor and os.write.
    """

    def __init__(self, stream: TarStream, *, label: str, max_metadata: int) -> None:
        self._stream = stream
        self._label = label
        self._max_metadata = max_metadata
        self._buf = b""
        self._view = memoryview(self._buf)
        self._pos = 0
        self._left = 0  # data bytes of the current entry not read yet
        self._pad = 0  # padding after them
        self._globals: dict[str, str] = {}
        self._global_size = 0
        self.offset = 0  # bytes of the stream consumed so far
        self.last: str | None = None  # the last entry's name, for errors after it

    # Raw bytes

    def _fill(self) -> bool:
        """Read the next piece of the stream; False at its end."""
        self._buf = self._stream.read(CHUNK)
        self._view = memoryview(self._buf)
        self._pos = 0
        return bool(self._buf)

    def _take(self, size: int) -> bytes:
        """`size` bytes, or fewer where the stream ends first."""
        pos = self._pos
        if pos + size <= len(self._buf):
            self._pos = pos + size
            self.offset += size
            return self._buf[pos:pos + size]
        pieces = []
        want = size
        while want:
            if self._pos >= len(self._buf) and not self._fill():
                break
            piece = self._buf[self._pos:self._pos + want]
            self._pos += len(piece)
            want -= len(piece)
            pieces.append(piece)
        data = b"".join(pieces)
        self.offset += len(data)
        return data

    def _skip(self, size: int) -> int:
        """Pass over `size` bytes; how many could not be (the stream ended)."""
        while size:
            if self._pos >= len(self._buf) and not self._fill():
                return size
            step = min(size, len(self._buf) - self._pos)
            self._pos += step
            self.offset += step
            size -= step
        return 0

    def _error(self, reason: str) -> LayerError:
        return LayerError(reason, layer=self._label, entry=self.last)

    # Data

    def chunks(self) -> Iterator[memoryview]:
        """The current entry's data (for a sparse file, its segments back to back), as views of the stream.

        A view is valid until the next one is asked for. Data not read is skipped by the next entry.
        """
        while self._left:
            if self._pos >= len(self._buf) and not self._fill():
                raise LayerError("truncated tar (the stream ends inside this entry's data)")
            step = min(self._left, len(self._buf) - self._pos)
            start = self._pos
            self._pos += step
            self.offset += step
            self._left -= step
            yield self._view[start:start + step]

    def write_to(self, fd: int) -> int:
        """Write the current entry's data to `fd` straight from the stream's pieces; returns the bytes.

        What chunks() and a loop of os.write do, without a generator per entry (20k entries, 20k generators).
        """
        written = 0
        while self._left:
            if self._pos >= len(self._buf) and not self._fill():
                raise LayerError("truncated tar (the stream ends inside this entry's data)")
            start = self._pos
            step = min(self._left, len(self._buf) - start)
            done = os.write(fd, self._view[start:start + step])
            while done < step:  # a short write (not on tmpfs or ext4 for a regular file, but allowed)
                done += os.write(fd, self._view[start + done:start + step])
            self._pos += step
            self.offset += step
            self._left -= step
            written += step
        return written

    def _finish_entry(self) -> None:
        if self._left + self._pad:
            missing = self._skip(self._left + self._pad)
            self._left = self._pad = 0
            if missing:
                raise self._error("truncated tar (the stream ends inside this entry's data)")

    # Headers

    def __iter__(self) -> Iterator[Member]:
        while True:
            member = self._next()
            if member is None:
                return
            self.last = member.name
            yield member

    def _next(self) -> Member | None:
        """The next entry, with its metadata headers folded in; None at the end of the archive."""
        rest = self._left + self._pad
        end = self._pos + rest + BLOCK
        if self.offset and end <= len(self._buf):  # the rest of the entry and the next header are in this piece
            block = self._buf[end - BLOCK:end]
            self._pos = end
            self.offset += rest + BLOCK
            self._left = self._pad = 0
            if block != _ZERO:
                fields = self._fields(block)
                if fields[7] not in _METADATA:
                    return self._member(block, fields, {}, [], None, None)
            self._pos -= BLOCK  # an end block or a metadata header: the general loop below reads it again
            self.offset -= BLOCK
        else:
            self._finish_entry()
        pax: dict[str, str] = {}
        sparse00: list[int] = []
        long_name: str | None = None
        long_link: str | None = None
        metadata = 0
        while True:
            pending = bool(pax or sparse00 or long_name is not None or long_link is not None or metadata)
            block = self._take(BLOCK)
            if len(block) < BLOCK:
                if block or pending:
                    raise self._error("truncated tar header after this entry" if self.last is not None
                                      else "truncated tar header")
                if self.offset == 0:
                    raise self._error("truncated tar (an empty stream, without even an end-of-archive block)")
                return None  # the stream ends right after the last entry's data: accepted (module doc)
            if block == _ZERO:
                if pending:
                    raise self._error("corrupt tar header (an end-of-archive block after an extended header)")
                return None
            fields = self._fields(block)
            kind = fields[7]
            if kind in _METADATA:
                size = _number(fields[4], "size", self)
                metadata += size
                if kind == b"g":
                    self._global_size += size
                if metadata > self._max_metadata or self._global_size > self._max_metadata:
                    raise LimitError("one tar header's metadata (PAX records, long names) is too large",
                                     layer=self._label)
                data = self._padded(size)
                if kind == b"L":
                    long_name = _text(data.split(b"\0", 1)[0])
                elif kind == b"K":
                    long_link = _text(data.split(b"\0", 1)[0])
                else:
                    target = self._globals if kind == b"g" else pax
                    for key, value in self._pax_records(data):
                        if key in _PAX_SPARSE_00 and kind != b"g":
                            sparse00.append(self._pax_int(key, value))
                        target[key] = value
                continue
            return self._member(block, fields, pax, sparse00, long_name, long_link)

    def _fields(self, block: bytes) -> tuple[bytes, ...]:
        fields = _HEADER.unpack(block)
        checksum = _octal(fields[6], "checksum", self)
        unsigned = _byte_sum(block) - sum(fields[6]) + 256  # the checksum field counts as 8 spaces
        if checksum != unsigned and checksum != sum(_SIGNED.unpack(block)) + 256:
            raise self._error("corrupt tar header (bad checksum) after this entry" if self.last is not None
                              else "corrupt tar header (bad checksum)")
        return fields

    def _numbers(self, block: bytes, fields: tuple[bytes, ...]) -> tuple[int, int, int, int, int]:
        """The mode, uid, gid, size and mtime of a header.

        These five numbers sit side by side: when all 48 bytes are octal digits, spaces and NULs (nearly
        always), one translate checks them and int() reads each; anything else (base-256, odd padding)
        goes field by field through _number.
        """
        numbers = block[100:148]
        if not numbers.translate(None, _OCTAL_FIELDS):
            text = numbers.translate(_NUL_TO_SPACE)
            try:
                return (int(text[0:8], 8), int(text[8:16], 8), int(text[16:24], 8), int(text[24:36], 8),
                        int(text[36:48], 8))
            except ValueError:  # a blank field, or digits after a NUL: the slow path says what tarfile says
                pass
        return (_number(fields[1], "mode", self), _number(fields[2], "uid", self), _number(fields[3], "gid", self),
                _number(fields[4], "size", self), _number(fields[5], "mtime", self))

    def _member(self, block: bytes, fields: tuple[bytes, ...], pax: dict[str, str], sparse00: list[int],
                long_name: str | None, long_link: str | None) -> Member:
        (raw_name, _, _, _, _, _, _, kind, raw_link, magic, _, _, _, major, minor, prefix) = fields
        name = _text(raw_name.split(b"\0", 1)[0])
        if magic == b"ustar\0" and prefix[0]:  # POSIX ustar; GNU's "ustar  " keeps other things there
            name = _text(prefix.split(b"\0", 1)[0]) + "/" + name
        if long_name is not None:
            name = long_name
        if kind == b"\0" and name.endswith("/"):  # a v7 directory
            kind = b"5"
        link = long_link if long_link is not None else _text(raw_link.split(b"\0", 1)[0]) if raw_link[0] else ""
        devices = kind in (b"3", b"4")  # the device numbers mean nothing (and are often blank) elsewhere
        member = Member(name, link, kind, *self._numbers(block, fields),
                        _number(major, "devmajor", self) if devices else 0,
                        _number(minor, "devminor", self) if devices else 0, pax)
        if self._globals:
            pax = member.pax_headers = {**self._globals, **pax}
        if pax:
            self._apply_pax(member, pax)
        if member.size < 0:
            raise self._error(f"corrupt tar header (size {member.size}) after this entry")
        stored = member.stored = 0 if kind in _NO_DATA else member.size
        if kind == b"S":
            self._old_gnu_sparse(member, block)
            stored = member.stored
        elif pax and ("GNU.sparse.map" in pax or "GNU.sparse.size" in pax or "GNU.sparse.major" in pax):
            self._pax_sparse(member, pax, sparse00)
            stored = member.stored
        elif kind == b"5":
            member.name = member.name.rstrip("/")
        self._left = stored
        self._pad = -stored % BLOCK
        return member

    def _pax_sparse(self, member: Member, pax: dict[str, str], sparse00: list[int]) -> None:
        """GNU's PAX sparse forms: 0.1 (a map record), 0.0 (repeated offset/numbytes records), 1.0 (map in the data)."""
        if "GNU.sparse.map" in pax:
            self._sparse_map(member, [self._pax_int("GNU.sparse.map", v) for v in pax["GNU.sparse.map"].split(",")])
        elif "GNU.sparse.size" in pax:
            self._sparse_map(member, sparse00)
        elif pax.get("GNU.sparse.major") == "1" and pax.get("GNU.sparse.minor") == "0":
            self._sparse_10(member)

    def _apply_pax(self, member: Member, pax: dict[str, str]) -> None:
        if "path" in pax:
            member.name = pax["path"].rstrip("/")
        if "GNU.sparse.name" in pax:
            member.name = pax["GNU.sparse.name"]
        if "linkpath" in pax:
            member.linkname = pax["linkpath"]
        for key in ("size", "uid", "gid"):  # a bad number is refused: tarfile's 0 would mean root, or desync
            if key in pax:
                setattr(member, key, self._pax_int(key, pax[key]))

    def _pax_int(self, key: str, value: str) -> int:
        if not value.isascii() or not value.isdigit():
            raise self._error(f"corrupt tar header (PAX {key}={value[:40]!r} is not a number)")
        return int(value)

    def _padded(self, size: int) -> bytes:
        """The data of a metadata header, its padding skipped."""
        data = self._take(size)
        if len(data) < size or self._skip(-size % BLOCK):
            raise self._error("truncated tar header after this entry" if self.last is not None
                              else "truncated tar header")
        return data

    def _pax_records(self, data: bytes) -> Iterator[tuple[str, str]]:
        r"""`<length> <key>=<value>\n` records (POSIX pax § extended header); framing errors are refused."""
        pos, end = 0, len(data)
        while pos < end and data[pos]:
            space = data.find(b" ", pos, pos + 24)
            length_text = data[pos:space]
            if space < 0 or not length_text.isdigit():
                raise self._error("corrupt tar header (a malformed PAX record)")
            length = int(length_text)
            record_end = pos + length
            if length < 5 or record_end > end or data[record_end - 1] != 0x0A:
                raise self._error("corrupt tar header (a malformed PAX record)")
            key, equals, value = data[space + 1:record_end - 1].partition(b"=")
            if not key or not equals:
                raise self._error("corrupt tar header (a malformed PAX record)")
            yield _text(key), _text(value)
            pos = record_end

    # Sparse files

    def _old_gnu_sparse(self, member: Member, block: bytes) -> None:
        numbers = _sparse_numbers(block[386:482], 4, self)
        extended = block[482]
        member.size = _number(block[483:495], "realsize", self)
        metadata = 0
        while extended:
            metadata += BLOCK
            if metadata > self._max_metadata:
                raise LimitError("one tar header's metadata (sparse map) is too large", layer=self._label)
            more = self._take(BLOCK)
            if len(more) < BLOCK:
                raise self._error("truncated tar header after this entry")
            numbers += _sparse_numbers(more[:504], 21, self)
            extended = more[504]
        member.type = b"0"
        self._sparse_map(member, numbers)

    def _sparse_10(self, member: Member) -> None:
        """GNU sparse 1.0: the map is decimal lines at the start of the data, padded to a block."""
        numbers: list[int] = []
        text = b""
        count = -1
        used = 0
        while count < 0 or len(numbers) < 2 * count:
            if b"\n" not in text:
                if used + BLOCK > member.stored:
                    raise self._error("corrupt tar header (a sparse map longer than the entry)")
                more = self._take(BLOCK)
                if len(more) < BLOCK:
                    raise self._error("truncated tar (the stream ends inside this entry's sparse map)")
                used += BLOCK
                text += more
                continue
            line, text = text.split(b"\n", 1)
            if not line.isdigit():
                raise self._error("corrupt tar header (a malformed sparse map)")
            if count < 0:
                count = int(line)
            else:
                numbers.append(int(line))
        member.stored -= used
        self._sparse_map(member, numbers)

    def _sparse_map(self, member: Member, numbers: list[int]) -> None:
        """Check the map: segments in order, inside the file, and exactly as much data as the archive holds."""
        pax = member.pax_headers
        for key in ("GNU.sparse.realsize", "GNU.sparse.size"):
            if key in pax:
                member.size = self._pax_int(key, pax[key])
        if len(numbers) % 2:
            raise self._error("corrupt tar header (a sparse map with an odd count)")
        segments = []
        end = 0
        total = 0
        for offset, length in zip(numbers[::2], numbers[1::2], strict=True):
            if offset < end or offset + length > member.size:
                raise self._error("corrupt tar header (a sparse map out of order or past the file's size)")
            end = offset + length
            total += length
            if length:
                segments.append((offset, length))
        if total != member.stored:
            raise self._error(f"corrupt tar header (a sparse map of {total} bytes for {member.stored} stored)")
        member.sparse = segments


def _byte_sum(block: bytes) -> int:
    """The sum of a header's 512 bytes, exactly, six times faster than sum(block).

    Adler-32's first half is 1 + the byte sum, modulo 65521; over 256 bytes the sum is at most
    65280, so no modulo ever applies and each half's sum comes out exact.
    """
    return (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2


def _sparse_numbers(area: bytes, count: int, reader: TarReader) -> list[int]:
    numbers = []
    for n in range(count):
        offset, length = area[n * 24:n * 24 + 12], area[n * 24 + 12:n * 24 + 24]
        if not offset[0] and not length[0]:
            break
        numbers += [_number(offset, "sparse offset", reader), _number(length, "sparse length", reader)]
    return numbers


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _octal(field: bytes, what: str, reader: TarReader) -> int:
    """_number's fast path: plain octal digits, then NULs or spaces (what nearly every tar writes)."""
    digits = field.rstrip(b"\0 ")
    if digits.isdigit() and b"8" not in digits and b"9" not in digits:
        return int(digits, 8)
    return _number(field, what, reader)


def _number(field: bytes, what: str, reader: TarReader) -> int:
    """An octal field (NUL or space terminated), or GNU's base-256 (a leading 0x80, or 0xff if negative)."""
    lead = field[0]
    if lead in (0x80, 0xFF):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if lead == 0xFF else value
    digits = field.split(b"\0", 1)[0].strip()
    if not digits:
        return 0
    if not digits.isdigit():
        raise reader._error(f"corrupt tar header (bad {what} field) after this entry" if reader.last is not None
                            else f"corrupt tar header (bad {what} field)")
    try:
        return int(digits, 8)
    except ValueError:
        raise reader._error(f"corrupt tar header (bad {what} field)") from None


def read_members(stream: TarStream, *, label: str, max_metadata: int) -> Iterator[tuple[TarReader, Member]]:
    """Yield (reader, member) in archive order; `reader.chunks()` gives the member's data until the next one.

    Errors of the archive itself are LayerErrors naming the last entry read before them; errors
    raised while the caller handles a member are the caller's to name.
    """
    reader = TarReader(stream, label=label, max_metadata=max_metadata)
    for member in reader:
        yield reader, member
