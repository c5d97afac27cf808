"""The build cache: step key -> the layer that step made (or that it made none), kept between builds.

A step's key chains the key of the step before it (down to the base image's manifest digest, or
"scratch"), the instruction text and a digest of what it reads from the context, so a hit means the
same base, the same instructions in the same order and the same inputs: the same layer (Docker's
classic builder matches the same way, but on source mtimes too; this builder does not copy times).

The directory holds `index.json` (key -> entry) and `blobs/sha256/<diff_id>` (uncompressed layer
tars, so an entry serves gzip and plain builds alike). Both are written atomically (a temporary file,
then rename). Nothing read back is trusted: an index that does not parse, an entry of the wrong
shape, or a blob whose digest is not its name is ignored with a CacheWarning and the step rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.ref.digest import parse_digest
from conformance.ref.errors import LayoutError


class CacheWarning(UserWarning):
    """A cache entry could not be trusted and was ignored: the step is rebuilt."""


@dataclass(frozen=True, slots=True)
class CachedStep:
    """What a step made: its uncompressed layer (None for a metadata-only step) and its entry count."""

    layer: bytes | None
    entries: int


def step_key(parent: str, text: str, inputs: str) -> str:
    """The key of a step after `parent` (the previous key, or the base's digest, or "scratch")."""
    return "sha256:" + hashlib.sha256(f"{parent}\n{text}\n{inputs}".encode()).hexdigest()


class BuildCache:
    """One cache directory (created when missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)

    def lookup(self, key: str) -> CachedStep | None:
        """The step stored under `key`, verified; None (with a CacheWarning where it was bad) otherwise."""
        entry = self._index().get(key)
        if entry is None:
            return None
        try:
            return self._verified(entry)
        except (LayoutError, OSError, ValueError) as err:
            warnings.warn(f"build cache {self.path}: entry {key[:19]}..: {err}; ignored, the step is rebuilt",
                          CacheWarning, stacklevel=2)
            return None

    def store(self, key: str, step: CachedStep) -> None:
        """Remember `step` under `key` (the blob first, so an entry never names a missing blob)."""
        entry: dict[str, Any] = {"empty_layer": step.layer is None, "entries": step.entries}
        if step.layer is not None:
            digest = "sha256:" + hashlib.sha256(step.layer).hexdigest()
            self._write(self.path / "blobs" / "sha256" / digest[7:], step.layer)
            entry.update(blob=digest, diff_id=digest, size=len(step.layer))
        index = self._index(quiet=True)
        index[key] = entry
        self._write(self.path / "index.json", json.dumps(index, sort_keys=True, indent=1).encode())

    def _index(self, *, quiet: bool = False) -> dict[str, Any]:
        where = self.path / "index.json"
        try:
            data = where.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            index = json.loads(data)
        except ValueError as err:
            index = err
        if isinstance(index, dict):
            return index
        if not quiet:
            warnings.warn(f"build cache {where}: not a JSON object ({index}); ignored, every step is rebuilt",
                          CacheWarning, stacklevel=3)
        return {}

    def _verified(self, entry: Any) -> CachedStep:
        if not isinstance(entry, dict) or not isinstance(entry.get("empty_layer"), bool) \
                or type(entry.get("entries")) is not int:
            raise ValueError("malformed entry (needs empty_layer and entries)")
        if entry["empty_layer"]:
            return CachedStep(None, entry["entries"])
        blob, diff_id, size = entry.get("blob"), entry.get("diff_id"), entry.get("size")
        algorithm, encoded = parse_digest(blob)
        if algorithm != "sha256" or diff_id != blob or type(size) is not int:
            raise ValueError("malformed entry (blob, diff_id and size disagree)")
        data = (self.path / "blobs" / "sha256" / encoded).read_bytes()
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != blob or len(data) != size:
            raise ValueError(f"blob {str(blob)[:19]}.. holds content of digest {actual[:19]}.. ({len(data)} bytes)")
        return CachedStep(data, entry["entries"])

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".conformance-tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
