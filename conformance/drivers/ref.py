"""The project's reference implementations (conformance/ref), run by the probe on the host.

It offers the layers area (OCI layers, layouts, diffs, the layer store), the overlay area (the
overlayfs model), the namespaces area (the runtime) and the cgroups area (the runtime's cgroup manager).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from conformance.drivers import Availability
from conformance.probe.cg_faults import CG_FAULTS
from conformance.probe.ns_faults import NS_FAULTS
from conformance.probe.overlay_faults import OVERLAY_FAULTS

if TYPE_CHECKING:
    from conformance.transport import ProbeClient

#: The faulty variants of the reference implementation: each is one named fault point in conformance/ref
#: (its `faults` keyword), chosen by conformance/probe/layer_checks.py:FAULT_BEHAVIOURS.
FAULTS: dict[str, str] = {
    "LAYER-WH-001": "ignores whiteouts: the lower entry they name stays (ignore-whiteouts)",
    "LAYER-WH-002": "lets a whiteout delete what its own layer wrote (whiteouts-hit-own-layer)",
    "LAYER-WH-003": "ignores opaque markers: lower children stay (ignore-opaque)",
    "LAYER-WH-004": "lets an opaque marker delete what its own layer wrote (whiteouts-hit-own-layer)",
    "LAYER-WH-005": "extracts whiteouts as plain files instead of applying them (extract-whiteouts)",
    "LAYER-WH-006": "silently ignores whiteouts that name nothing, . or .. (accept-bad-whiteouts)",
    "LAYER-HL-001": "skips hardlink entries (drop-hardlinks)",
    "LAYER-SYM-001": "makes absolute symlink targets relative (relative-symlinks)",
    "LAYER-ATTR-001": "writes every file with mode 0644 (ignore-modes)",
    "LAYER-SAFE-001": "lets the kernel follow symlinked parent directories, out of the rootfs too (follow-symlinks)",
    "LAYER-DIFF-001": "leaves deletions out of the diff (omit-whiteouts)",
    "LAYER-DIFF-002": "adds a random PAX header to every diff entry (nondeterministic-diff)",
    "OCI-MANIFEST-001": "applies the manifest's layers top first (reverse-layers)",
    "OCI-DESC-001": "never compares a blob's hash with its digest (skip-digest-check)",
    "OCI-DESC-002": "reads a blob to its end whatever the descriptor's size says (skip-size-check)",
    "OCI-CONFIG-001": "reports the compressed blob's digest as the DiffID (diff-id-of-blob)",
    "OCI-CONFIG-002": "never compares layers with rootfs.diff_ids (skip-diff-id-check)",
    "OCI-CONFIG-003": "hashes ChainIDs without the space between the two digests (chain-id-without-space)",
    "OCI-LAYOUT-001": "takes any directory for an image layout (skip-layout-check)",
    "OCI-CONFIG-004": "never looks at rootfs.type (skip-rootfs-type-check)",
    "OCI-COPY-001": "re-tars each layer in GNU format when copying, and records the new DiffIDs (repack-on-copy)",
    "LAYER-WH-007": "ignores whiteouts: the whited-out directory stays (ignore-whiteouts)",
    "LAYER-STORE-001": "stores whiteouts as .wh. files instead of 0/0 devices (whiteouts-as-files)",
    "LAYER-SAFE-002": "lets the kernel follow symlinked parent directories, out of the rootfs too (follow-symlinks)",
    "OCI-MANIFEST-002": "stacks the store's lower dirs base on top when mounting a container (lowers-bottom-first)",
    "LAYER-BUILD-001": "puts the whole tree in each build step's layer, not the step's changes (snapshot-layers)",
    "OCI-CONFIG-005": "records metadata steps as if they made a layer (history-without-empty-layer)",
    "LAYER-WH-008": "creates the missing parent directory of a whiteout (mkdir-whiteout-parents)",
    "LAYER-DIR-001": "keeps a lower directory's mode, owner and time under an upper one (dir-keeps-old-attributes)",
    "LAYER-REPLACE-001": "truncates and rewrites an existing file, through its links (write-in-place)",
    "LAYER-DEV-001": "leaves device and fifo entries out (skip-devices)",
    "LAYER-ATTR-002": "never sets modification times (ignore-mtimes)",
    "LAYER-ATTR-003": "drops extended attributes (ignore-xattrs)",
    "OCI-MEDIA-001": "reads a gzip layer as if it were an uncompressed tar (gzip-as-tar)",
    "OCI-MEDIA-002": "refuses zstd layers (no-zstd)",
    "LAYER-SAFE-003": "takes a layer that cannot be read whole as complete (lenient-reader)",
    "OCI-LAYOUT-002": "skips a layer whose blob the layout lacks (missing-blob-as-empty)",
}
for _table in (OVERLAY_FAULTS, NS_FAULTS, CG_FAULTS):
    FAULTS.update({clause: f"{what} ({behaviour})" for clause, (behaviour, what) in _table.items()})


class RefDriver:
    """The readable Python reference implementations, the oracle of differential tests."""

    name: ClassVar[str] = "ref"
    # the layer store (ref/store.py), the overlayfs model (ref/overlay.py), the runtime (ref/runtime.py)
    # and its cgroup manager (ref/cgmanager.py)
    areas: ClassVar[frozenset[str]] = frozenset({"layers", "overlay", "namespaces", "cgroups"})
    description: ClassVar[str] = "the project's reference implementations in Python (conformance/ref)"

    def available(self, facts: Mapping[str, Any]) -> Availability:
        """The reference implementations need only the host's python3, which the probe already needs."""
        return Availability.yes()

    def version(self, facts: Mapping[str, Any]) -> str | None:
        """The suite's own version: the reference implementations ship with it."""
        from conformance import __version__  # noqa: PLC0415

        return __version__

    def faults(self) -> Mapping[str, str]:
        """Faulty variants for every LAYER and OCI clause."""
        return FAULTS

    def clean(self, client: ProbeClient) -> list[str]:
        """The reference implementations leave only what the generic sweep removes."""
        return []
