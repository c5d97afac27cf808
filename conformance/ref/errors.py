"""The exceptions of the reference implementations.

Each one says which thing was wrong and why, in one line a person can act on: the layer, the entry,
the reason. The suite records these messages in observations, so their shape is part of the API.
"""

from __future__ import annotations


class RefError(Exception):
    """Anything the reference implementations refuse: a bad layout, a hostile layer, a limit passed."""


class LayoutError(RefError):
    """An OCI image layout or one of its documents or blobs is malformed, missing or does not verify."""


class LayerError(RefError):
    """A layer cannot be applied (or generated) safely or correctly.

    `str()` reads `layer sha256:ab12..: entry '../etc/passwd': path escapes the rootfs`; the parts
    stay available as attributes so tests and observations need not parse the message.
    """

    def __init__(self, reason: str, *, layer: str | None = None, entry: str | None = None) -> None:
        self.reason = reason
        self.layer = layer
        self.entry = entry
        super().__init__(self._message())

    def _message(self) -> str:
        parts = []
        if self.layer is not None:
            parts.append(f"layer {self.layer}")
        if self.entry is not None:
            parts.append(f"entry {self.entry!r}")
        parts.append(self.reason)
        return ": ".join(parts)

    def within(self, *, layer: str | None = None, entry: str | None = None) -> LayerError:
        """The same error with the layer (and entry) filled in where the raiser did not know them."""
        return type(self)(self.reason, layer=self.layer or layer, entry=self.entry if self.entry is not None else entry)


class LimitError(LayerError):
    """A configured limit (bytes, entries, metadata size) was passed: a decompression or tar bomb."""


class UnsafePathError(RefError):
    """A path would leave the rootfs (`..`, an absolute or escaping symlink) or crosses a non-directory.

    Raised by tarsafe without knowing the layer; layers.py turns it into a LayerError naming the entry.
    """


class BuildError(RefError):
    """A Containerfile cannot be parsed or built.

    `str()` reads `Containerfile line 3 (RUN make): RUN needs the runtime ...; remove it`: the line and
    the instruction, then why and what to do. The parts stay available as attributes.
    """

    def __init__(self, reason: str, *, line: int | None = None, instruction: str | None = None) -> None:
        self.reason = reason
        self.line = line
        self.instruction = instruction
        where = "Containerfile" if line is None else f"Containerfile line {line}"
        if instruction is not None:
            where += f" ({instruction if len(instruction) <= 60 else instruction[:57] + '...'})"
        super().__init__(f"{where}: {reason}")
