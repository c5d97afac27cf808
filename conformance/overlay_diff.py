"""Differential checks of the overlay area: one scenario through two implementations, and what differs.

The property tests (tests/overlay/) generate random layer stacks and operation sequences, run each
through the reference model and the kernel in one probe call per implementation, and report the
scenarios whose observations differ. A failing scenario shrinks to a minimal one and is written as a
YAML file; `conformance overlay replay FILE --impl kernel --against ref` runs it again, and the
files kept under tests/overlay/regressions/ are replayed by every test run.

What is compared is the observation the contract (conformance/scenarios/overlay.py) defines, less
what no model can predict: modification times (the kernel stamps "now" on writes and on directories
it changes) and the bytes of file handles (already "*" in the observation).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conformance.scenarios import Scenario

#: Node fields left out of the comparison, and why: see the module docstring.
UNPREDICTABLE = frozenset({"mtime"})


def comparable(observation: Mapping[str, Any]) -> dict[str, Any]:
    """The observation with the unpredictable fields taken out."""
    def clean(tree: Mapping[str, Any]) -> dict[str, Any]:
        return {path: {key: value for key, value in node.items() if key not in UNPREDICTABLE}
                for path, node in sorted(tree.items())}

    if observation.get("mount_error"):
        return {"mount_error": observation["mount_error"]}
    return {"mount_error": None, "results": list(observation.get("results") or []),
            "merged": clean(observation.get("merged") or {}), "upper": clean(observation.get("upper") or {})}


def differences(left: Mapping[str, Any], right: Mapping[str, Any], names: tuple[str, str] = ("ref", "kernel"),
                ops: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """What differs between two observations of one scenario, one line each, named for a person."""
    a, b = comparable(left), comparable(right)
    if a.get("mount_error") != b.get("mount_error"):
        said = [a.get("mount_error") or "mounted", b.get("mount_error") or "mounted"]
        return [f"mount: {names[0]} {said[0]}, {names[1]} {said[1]}"]
    if a.get("mount_error"):
        return []
    found = []
    for n, (x, y) in enumerate(zip(a["results"], b["results"], strict=False)):
        if x != y:
            what = json.dumps(ops[n], sort_keys=True) if n < len(ops) else f"op {n}"
            found.append(f"op {n} {what}: {names[0]} {x}, {names[1]} {y}")
    for tree in ("merged", "upper"):
        for path in sorted(set(a[tree]) | set(b[tree])):
            x, y = a[tree].get(path), b[tree].get(path)
            if x != y:
                found.append(f"{tree}/{path}: {names[0]} {x}, {names[1]} {y}")
    return found


def scenario_yaml(params: Mapping[str, Any], note: str = "") -> str:
    """A scenario as the YAML file replay reads (stable key order, so a found case diffs well)."""
    import yaml  # noqa: PLC0415  (the controller has pyyaml; the probe never imports this module)

    header = "".join(f"# {line}\n" for line in note.splitlines()) if note else ""
    return header + yaml.safe_dump({"kind": "overlay.run", "params": dict(params)}, sort_keys=True,
                                   default_flow_style=None, width=110)


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario file written by scenario_yaml (or by hand); a clear error when it is not one."""
    import yaml  # noqa: PLC0415

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the scenario: {err}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "overlay.run" or not isinstance(doc.get("params"), dict):
        raise ValueError(f"{path}: not an overlay scenario (expected kind: overlay.run and params: {{...}})")
    params = doc["params"]
    for key in ("lowers", "ops"):
        if not isinstance(params.get(key, []), list):
            raise ValueError(f"{path}: params.{key} must be a list")
    return Scenario("overlay.run", params)


def name_for(params: Mapping[str, Any]) -> str:
    """A stable file name for a scenario: its content's digest."""
    return "found-" + hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12] + ".yaml"
