"""Host facts as flat ``dotted.key -> value`` pairs, the shape both the HTML tables and the diff need."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def flatten_facts(facts: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys, in their original order.

    Lists and scalars are leaves: a list of mount options is one fact whose change is one line in a
    diff, not N index-shifted lines. An empty mapping is kept as a leaf (``{}``) so that "probed,
    found nothing" stays distinct from "not probed".
    """
    flat: dict[str, Any] = {}
    for key, value in facts.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten_facts(value, dotted))
        else:
            flat[dotted] = value
    return flat


def fact_text(value: Any) -> str:
    """One fact value as short text: strings as they are, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
