"""The hostile layer corpus for the reference's own tests: the suite's data, built into bytes here.

The cases live once, as plain data, in conformance/scenarios/hostile.py; the probe's builder
(conformance/probe/hostile_checks.build_layers) turns them into blobs. These tests add what the suite
leaves to the reference alone: the exact words of its errors and the entry they name.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.probe.hostile_checks import build_layers
from conformance.ref.oci import LAYER_TAR
from conformance.scenarios.hostile import CASES, HostileCase


@dataclass(frozen=True)
class Case:
    hazard: str
    layers: tuple[bytes, ...]
    expect: str
    entry: str | None
    media_type: str = LAYER_TAR
    options: Mapping[str, Any] = field(default_factory=dict)


#: Cases the reference refuses (the last layer fails), and cases it contains.
BUILDERS: list[str] = [name for name, case in CASES.items() if case.expect == "refused"]
CONTAINED: list[str] = [name for name, case in CASES.items() if case.expect == "contained"]


def _placed(text: str, sentinel: Path) -> str:
    return text.replace("{sentinel}", str(sentinel))


def _blobs(case: HostileCase, sentinel: Path) -> tuple[bytes, ...]:
    return tuple(blob.data for blob in build_layers(case.scenario().params, str(sentinel)))


def build(name: str, sentinel: Path) -> Case:
    """A refused case's layers, with its sentinel's place filled in."""
    case = CASES[name]
    assert case.words is not None, f"{name} is not a refused case"
    entry = None if case.entry is None else _placed(case.entry, sentinel)
    return Case(case.hazard, _blobs(case, sentinel), case.words, entry, case.media_type, case.options)


def build_contained(name: str, sentinel: Path) -> tuple[bytes, str]:
    """A contained case's one layer and the path (relative to the rootfs) that it must create."""
    case = CASES[name]
    assert case.path is not None, f"{name} is not a contained case"
    [layer] = _blobs(case, sentinel)
    return layer, _placed(case.path, sentinel).lstrip("/")


def layer_members(layer: bytes) -> list[str]:
    """Names in a (plain) tar, for debugging a case."""
    return [m.name for m in tarfile.open(fileobj=io.BytesIO(layer))]
