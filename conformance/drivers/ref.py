"""The project's reference implementations (conformance/ref), run by the probe on the host.

It offers the layers area (OCI layers, layouts, diffs); the other area issues (overlay model, runtime,
cgroup manager) add their areas and faulty variants here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from conformance.drivers import Availability

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
    "OVL-COPYUP-001": 'the append does not copy the lower data up: upper/f is not abcdef (no-copy-up-on-write)',
    "OVL-COPYUP-002": 'copied-up f and g get a default mode, not 0640 and 0755 (copy-up-loses-mode)',
    "OVL-COPYUP-003": 'copied-up f is owned by 0:0, not 1000:1001 (copy-up-loses-owner)',
    "OVL-COPYUP-004": 'copied-up f gets the copy time as mtime, not 1500000000 (copy-up-loses-mtime)',
    "OVL-COPYUP-005": 'copied-up f has no user.colour (copy-up-loses-xattrs)',
    "OVL-COPYUP-006": 'the parent directories a and a/b are copied up with a default mode, not 0750 and 0700 (the fault must apply to parent directories too) (copy-up-loses-mode)',
    "OVL-COPYUP-008": 'truncate does not copy f up: upper/f is missing (truncate-without-copy-up)',
    "OVL-COPYUP-010": 'the parent directory d is copied up owned by 0:0, not 3:3 (the fault must apply to parent directories too) (copy-up-loses-owner)',
    "OVL-LOOKUP-001": 'reads the lower a instead of the upper a that hides it (lower-shadows-upper)',
    "OVL-LOOKUP-002": 'shows the lower directory x (with x/child) over the upper file x, and the lower file y over the upper directory y (lower-shadows-upper)',
    "OVL-LOOKUP-003": 'd/both, which both layers hold, reads the lower content (lower-shadows-upper)',
    "OVL-LOOKUP-004": "the merged directory d takes the lower directory's mode 0700, uid 1 and mtime, not the upper's (the fault must apply to a merged directory's attributes too) (lower-shadows-upper)",
    "OVL-LOOKUP-005": 'stacks lowerdir right to left reversed: f reads l2 and g reads l2 (lowers-bottom-first)',
    "OVL-META-001": 'with metacopy=on chmod copies the data up too (metacopy-copies-data)',
    "OVL-MOUNT-001": 'mounts userxattr with redirect_dir=on and follow (accept-bad-options)',
    "OVL-MOUNT-002": 'mounts userxattr with metacopy=on (accept-bad-options)',
    "OVL-MOUNT-003": 'mounts metacopy=on with redirect_dir off, follow or nofollow (accept-bad-options)',
    "OVL-MOUNT-004": 'mounts with redirect_dir=sideways, metacopy=maybe and the like (accept-bad-options)',
    "OVL-MOUNT-005": 'on a host whose module redirect_dir is N the lower a/d is renamed instead of EXDEV; where it is Y, b/e gets no overlay.redirect (rename-dir-without-redirect)',
    "OVL-NONSTD-001": 'rename of the merged d succeeds instead of EXDEV (rename-dir-without-redirect)',
    "OVL-NONSTD-002": 'with index=off the copy-up keeps the link: b reads data+ (hardlinks-kept-without-index)',
    "OVL-OPAQUE-001": 'the opaque upper d still lists the lower d/a and d/sub (opaque-ignored)',
    "OVL-OPAQUE-002": "the middle layer's opaque d does not hide the bottom layer's d/bottom (the fault must apply to opaque directories in lower layers too) (opaque-ignored)",
    "OVL-OPAQUE-003": 'mkdir d over the whiteout makes a plain dir: d/a shows again (mkdir-without-opaque)',
    "OVL-READDIR-001": 'readdir lists f and d once per layer that holds them (readdir-duplicates)',
    "OVL-READDIR-002": 'readdir lists whited-out names (b, c, e, stray) stat cannot find (readdir-shows-whiteouts)',
    "OVL-RENAME-001": 'rename of the lower a/d succeeds (moved without a redirect) instead of EXDEV (rename-dir-without-redirect)',
    "OVL-RENAME-002": 'rename of the lower a/d writes no overlay.redirect, so b/e loses its lower child x (rename-dir-without-redirect)',
    "OVL-RENAME-005": 'the rename of the deep directory succeeds without a redirect instead of EXDEV (rename-dir-without-redirect)',
    "OVL-RMDIR-001": 'rmdir d and rmdir e succeed although lower children show (rmdir-ignores-lower-children)',
    "OVL-RMDIR-002": 'd/a and d/b reappear after their unlink, so rmdir d fails with ENOTEMPTY (no-whiteout-on-unlink)',
    "OVL-WHITEOUT-001": 'the lower a shows through the upper whiteout: stat a works (whiteout-ignored)',
    "OVL-WHITEOUT-002": 'readdir / lists the whiteouts a and stray beside b (readdir-shows-whiteouts)',
    "OVL-WHITEOUT-003": 'the lower directory d and its subtree show through the whiteout d (whiteout-ignored)',
    "OVL-WHITEOUT-004": "the middle lower layer's whiteout a does not hide the bottom layer's a (the fault must apply to whiteouts in lower layers, not only in the upper) (whiteout-ignored)",
    "OVL-WHITEOUT-005": 'unlink leaves no 0/0 device in upper: f, h, s, p reappear (no-whiteout-on-unlink)',
    "OVL-WHITEOUT-006": 'unlink f leaves upper/f in place, so merged still shows f (unlink-leaves-upper-file)',
    "OVL-WHITEOUT-007": 'unlinking the copied-up a leaves the upper file a instead of a whiteout (unlink-leaves-upper-file)',
    "OVL-WHITEOUT-008": 'read, write, chmod... of the whited-out a reach the lower a (whiteout-ignored)',
    "OVL-WHITEOUT-009": 'after unlink the lower f, s, p reappear, so create/symlink/mknod fail with EEXIST (no-whiteout-on-unlink)',
}


class RefDriver:
    """The readable Python reference implementations, the oracle of differential tests."""

    name: ClassVar[str] = "ref"
    areas: ClassVar[frozenset[str]] = frozenset({"layers", "overlay"})  # the layer store (ref/store.py) included
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
