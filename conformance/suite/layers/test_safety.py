"""LAYER-SAFE-*: hostile layers stay inside the rootfs."""

from __future__ import annotations

import pytest

from conformance.scenarios import layers
from conformance.scenarios.layers import file, hardlink, symlink
from conformance.target import Target

#: Each layer plants a symlink to the sentinel dir beside the rootfs, then writes or links through it.
ESCAPES = {
    "a file under an absolute symlink": [symlink("a", "{sentinel}"), file("a/victim", "owned")],
    "a file under a relative symlink climbing out": [symlink("b", "../sentinel"), file("b/victim", "owned")],
    "a hardlink to a file under an absolute symlink": [symlink("c", "{sentinel}"), hardlink("x", "c/keep")],
}


@pytest.mark.clause("LAYER-SAFE-001")
def test_apply_never_writes_through_a_symlink_out_of_the_rootfs(target: Target) -> None:
    """Layers writing or linking through planted symlinks to a sentinel dir MUST leave the sentinel as it was."""
    for what, layer in ESCAPES.items():
        seen = target.observe(layers.apply(layer))
        target.expect(f"sentinel changed by {what}", False, seen["sentinel_changed"],
                      hint=f"apply said: {seen.get('error', 'no error')}")
