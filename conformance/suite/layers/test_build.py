"""LAYER-BUILD-*, OCI-CONFIG-005: what a build of a Containerfile records, layer by layer and step by step."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.scenarios import layers
from conformance.scenarios.layers import directory, file
from conformance.target import Target

BASE = [directory("bin"), file("bin/tool", "tool", mode=0o755)]
CONTEXT: dict[str, Any] = {
    "app/run": {"content": "#!/bin/tool\n", "mode": 0o755},
    "app/conf": {"content": "x=1\n", "mode": 0o644},
    "data.tar": {"tar": [directory("d1", mode=0o750, uid=3, gid=4), file("d1/f", "payload", mode=0o640, uid=3, gid=4)]},
}
CONTAINERFILE = """FROM {base}
COPY app/ /app/
ENV GREETING=hello
ADD data.tar /data/
LABEL org.example.role=demo
USER 1000:1000
CMD ["/app/run"]
"""
#: The steps after FROM, and whether each makes a layer.
STEPS = [("COPY", True), ("ENV", False), ("ADD", True), ("LABEL", False), ("USER", False), ("CMD", False)]


def _build(target: Target) -> Any:
    seen = target.observe(layers.build(BASE, CONTEXT, CONTAINERFILE), timeout=300)
    target.expect("build error", None, seen.get("error"))
    return seen


@pytest.mark.clause("LAYER-BUILD-001")
def test_each_copy_and_add_makes_one_layer_of_its_own_changes(target: Target) -> None:
    """COPY app/ and ADD data.tar over a one-layer base SHOULD make two layers, each of that step's entries."""
    seen = _build(target)
    built = seen["layers"][seen["base_layers"]:]
    target.expect("layers made by the build", 2, len(built), hint="ENV, LABEL, USER and CMD make none")
    shapes = [{name: [entry["type"], oct(entry["mode"]), entry["uid"], entry["gid"], entry.get("content")]
               for name, entry in layer.items()} for layer in built[:2]]
    target.expect("the COPY layer", {"app": ["dir", "0o755", 0, 0, None],
                                     "app/conf": ["file", "0o644", 0, 0, "x=1\n"],
                                     "app/run": ["file", "0o755", 0, 0, "#!/bin/tool\n"]}, shapes[0] if shapes else {})
    target.expect("the ADD layer", {"data": ["dir", "0o755", 0, 0, None], "data/d1": ["dir", "0o750", 3, 4, None],
                                    "data/d1/f": ["file", "0o640", 3, 4, "payload"]},
                  shapes[1] if len(shapes) > 1 else {})


@pytest.mark.clause("OCI-CONFIG-005")
def test_history_marks_exactly_the_steps_without_a_layer(target: Target) -> None:
    """The history MUST mark ENV, LABEL, USER, CMD empty_layer and not COPY, ADD; the rest pair with diff_ids."""
    seen = _build(target)
    history = seen["history"]
    made = [not step["empty_layer"] for step in history]
    target.expect("history entries that made a layer", len(seen["diff_ids"]), sum(made),
                  hint="entries without empty_layer pair one to one with rootfs.diff_ids")
    target.expect("empty_layer of the build's steps (COPY, ENV, ADD, LABEL, USER, CMD)",
                  [not makes for _, makes in STEPS], [step["empty_layer"] for step in history[-len(STEPS):]])
