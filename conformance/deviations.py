"""Known deviations: a clause an implementation is known not to meet, recorded with a reason.

A deviation turns the result into xfail while it still deviates. It turns red when it starts passing
(strict xfail: the record is stale and must go) and when its expiry date has passed (someone must look
again), like InSpec waivers.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["deviations"],
    "additionalProperties": False,
    "properties": {
        "deviations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["clause", "implementation", "justification", "link", "expires"],
                "additionalProperties": False,
                "properties": {
                    "clause": {"type": "string", "pattern": "^[A-Z][A-Z0-9-]*-[0-9]{3}$"},
                    "implementation": {"type": "string", "minLength": 1},
                    "versions": {"type": "string"},
                    "justification": {"type": "string", "minLength": 10},
                    "link": {"type": "string", "minLength": 1},
                    "expires": {"type": "string", "format": "date"},
                },
            },
        }
    },
}


def _comparable(version: str) -> Version:
    """A PEP 440 version from what tools print: 1.1.5+ds1 as is, a kernel's 6.18.44-fc-v669 as 6.18.44."""
    try:
        return Version(version)
    except InvalidVersion:
        match = re.match(r"\d+(\.\d+)*", version)
        return Version(match.group(0) if match else "0")


class DeviationError(ValueError):
    """The deviations file is malformed; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class Deviation:
    """One recorded known deviation."""

    clause: str
    implementation: str
    versions: str
    justification: str
    link: str
    expires: dt.date

    def applies(self, clause: str, implementation: str, version: str | None) -> bool:
        """Whether this record covers that clause, implementation and version."""
        if clause != self.clause or implementation != self.implementation:
            return False
        if not self.versions or self.versions == "*":
            return True
        if version is None:
            return False
        return _comparable(version) in SpecifierSet(self.versions)

    def expired(self, today: dt.date | None = None) -> bool:
        """Past its expiry date."""
        return (today or dt.date.today()) > self.expires


def parse(path: Path | str, text: str) -> list[Deviation]:
    """Parse and validate a deviations file."""
    try:
        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {"deviations": []}  # see clauses
    except yaml.YAMLError as exc:
        raise DeviationError(f"{path}: not valid YAML: {exc}") from None
    for raw in doc.get("deviations") or [] if isinstance(doc, dict) else []:
        if isinstance(raw, dict) and isinstance(raw.get("expires"), dt.date):
            raw["expires"] = raw["expires"].isoformat()  # YAML reads an unquoted date as a date
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top)"
        raise DeviationError(f"{path}: {where}: {first.message}")
    found = []
    for i, raw in enumerate(doc["deviations"]):
        try:
            SpecifierSet(raw.get("versions", "")) if raw.get("versions", "*") != "*" else None
        except InvalidSpecifier:
            raise DeviationError(f"{path}: deviations/{i} ({raw['clause']}): versions {raw['versions']!r} "
                                 "is not a version range like '>=1.1,<1.2' or '*'") from None
        found.append(Deviation(raw["clause"], raw["implementation"], raw.get("versions", "*"),
                               " ".join(raw["justification"].split()), raw["link"],
                               dt.date.fromisoformat(str(raw["expires"]))))
    return found


def load(path: Path | str | None = None) -> list[Deviation]:
    """The package's deviations.yaml, or another file given by path."""
    if path is None:
        text = resources.files("conformance").joinpath("deviations.yaml").read_text(encoding="utf-8")
        return parse("conformance/deviations.yaml", text)
    return parse(path, Path(path).read_text(encoding="utf-8"))


def find(deviations: list[Deviation], clause: str, implementation: str, version: str | None) -> Deviation | None:
    """The first deviation that applies, if any."""
    return next((d for d in deviations if d.applies(clause, implementation, version)), None)
