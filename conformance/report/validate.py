"""Checking a results document against the schema and against itself, before anything trusts it.

The JSON Schema (schema/results.schema.json) covers shape; the cross-references it cannot express
(a result's clause is in ``clauses``, its host is in ``hosts``) are checked here, so that every
derived report can look them up without guarding each access.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from conformance.report.errors import ReportError

SCHEMA_RESOURCE = "schema/results.schema.json"
_PLAIN_KEY = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")  # the keys jsonschema's json_path writes as ".key"


def results_schema() -> dict[str, Any]:
    """The results.json schema, read from the package data (read each time: no module-level cache)."""
    text = resources.files("conformance.report").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _inline_refs(node: Any, defs: Mapping[str, Any]) -> Any:
    """The schema with every local ``#/$defs/x`` reference replaced by its target.

    Resolving a $ref costs jsonschema a registry lookup each time it is met; a 50,000-result run
    meets them hundreds of thousands of times, and inlining halves validation time. The schema has no
    recursive references, so this terminates; a $ref with sibling keywords becomes an allOf.
    """
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    ref = out.pop("$ref", None)
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {**out, "allOf": [target]} if out else target
    if ref is not None:
        out["$ref"] = ref
    return out


def validate(data: object, origin: str) -> None:
    """Raise ReportError naming ``origin`` and the JSON path of the first problem, if any.

    ``origin`` is the file name, or a short description when the data never was a file.
    """
    schema = results_schema()
    errors = list(Draft202012Validator(_inline_refs(schema, schema.get("$defs", {}))).iter_errors(data))
    if errors:
        best = best_match(errors)
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ReportError(f"{origin}: {_where(best)}: {best.message}{more}")
    assert isinstance(data, Mapping)  # the schema requires an object at the top
    _check_references(data, origin)


def _where(error: ValidationError) -> str:
    """The JSON path of a problem; for a missing key, the path the key should have had."""
    path = error.json_path
    required = error.validator_value
    if error.validator == "required" and isinstance(error.instance, Mapping) and isinstance(required, list):
        missing = [key for key in required if key not in error.instance]
        if missing:
            return path + _member(missing[0])
    return path


def _member(key: str) -> str:
    """A JSONPath member step spelled as jsonschema's ``json_path`` spells it: ``.id`` or ``['NS-PID-001']``."""
    return f".{key}" if _PLAIN_KEY.match(key) else f"['{key}']"


def _check_references(data: Mapping[str, Any], origin: str) -> None:
    """Cross-references the schema cannot state; each problem names its JSON path."""
    for key, clause in data["clauses"].items():
        if clause["id"] != key:
            raise ReportError(f"{origin}: $.clauses{_member(key)}.id: {clause['id']!r} differs from its key {key!r}")
    names: set[str] = set()
    for index, host in enumerate(data["hosts"]):
        if host["name"] in names:
            raise ReportError(f"{origin}: $.hosts[{index}].name: host {host['name']!r} is listed twice")
        names.add(host["name"])
    for index, result in enumerate(data["results"]):
        if result["clause"] is not None and result["clause"] not in data["clauses"]:
            raise ReportError(f"{origin}: $.results[{index}].clause: {result['clause']!r} is not in $.clauses")
        if result["host"] not in names:
            raise ReportError(f"{origin}: $.results[{index}].host: {result['host']!r} is not in $.hosts")
