"""Reading a layer tar entry by entry with tarfile, closing two gaps tarfile leaves in stream mode.

1. tarfile takes a corrupt or truncated header after the first one for the end of the archive and
   says nothing; a layer cut short would then apply as if it were whole (H-20). The reader records
   how tarfile's last header read ended, and `_check_end` turns anything but a zero block (or a clean
   end of stream right after the last entry's data, which Go's archive/tar also accepts) into an error.
2. tarfile reads a PAX record or a GNU long name into memory whole, however large its header says it
   is (H-21). The reader gives each header a byte budget, charged by TarStream as tarfile reads.

Only the documented `tarinfo=` class hook of tarfile.open is used, so this works from Python 3.9 on.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

from conformance.ref.errors import LayerError
from conformance.ref.streams import TarStream

if TYPE_CHECKING:
    from typing import Self

#: tarfile's stream reader copies what is left of its buffer on every read, headers included: a big
#: buffer makes each 512-byte header read cost a big copy (1 MiB made a 20k-entry layer 2x slower).
TAR_BUFFER = 64 << 10


def read_members(stream: TarStream, *, label: str,
                 max_metadata: int) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Yield (tar, member) in archive order; the member's data is readable until the next one.

    Errors of the archive itself are LayerErrors naming the last entry read before them; errors
    raised while the caller handles a member are the caller's to name.
    """
    ends: list[str] = []
    info_class = _guarded_tarinfo(stream, max_metadata, ends)
    last = None
    try:
        # typeshed's fileobj type wants seek/tell; stream mode ("r|") never calls them.
        with tarfile.open(fileobj=stream, mode="r|", bufsize=TAR_BUFFER, tarinfo=info_class) as tar:  # type: ignore[call-overload]
            while True:
                member = tar.next()
                if member is None:
                    break
                del tar.members[:]  # stream mode keeps every TarInfo otherwise
                last = member.name
                yield tar, member
            end = tar.offset
    except tarfile.TarError as err:
        raise LayerError(f"corrupt or truncated tar ({err})", layer=label, entry=last) from None
    _check_end(ends, end, stream, label, last)


def _guarded_tarinfo(stream: TarStream, budget: int, ends: list[str]) -> type[tarfile.TarInfo]:
    """A TarInfo class that bounds each header's metadata and records how each header read ended."""

    class GuardedTarInfo(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
            outermost = stream.metadata_budget is None  # a PAX header reads the next header itself
            if outermost:
                stream.metadata_budget = budget
            try:
                return super().fromtarfile(tarfile_)
            except tarfile.HeaderError as err:
                # EOFHeaderError (a zero block) and EmptyHeaderError (no more bytes) are not in typeshed.
                kind = type(err).__name__
                ends.append({"EOFHeaderError": "end", "EmptyHeaderError": "empty"}.get(kind, str(err) or kind))
                raise
            finally:
                if outermost:
                    stream.metadata_budget = None

    return GuardedTarInfo


def _check_end(ends: list[str], offset: int, stream: TarStream, label: str, last: str | None) -> None:
    """A tar ends in a zero block, or with the stream, exactly where its last entry's data ends."""
    how = ends[-1] if ends else "end"
    if how == "end":
        return
    if how == "empty" and stream.size >= offset:
        return
    reason = "truncated tar" if how == "empty" else f"corrupt tar header ({how})"
    raise LayerError(f"{reason} after this entry", layer=label, entry=last)
