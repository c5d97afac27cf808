"""The clause catalogue: one YAML file per area, loaded once and validated.

Clauses are data, not code, so that a person can read the catalogue without reading the suite, and so
that reports can carry the clause text without importing anything that runs on a host.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from conformance.verdicts import Level

AREAS: tuple[str, ...] = ("host", "layers", "overlay", "namespaces", "cgroups")
_ID = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*-\d{3}$")
_PREFIX: dict[str, str | tuple[str, ...]] = {
    "host": "HOST-", "layers": ("LAYER-", "OCI-"), "overlay": "OVL-", "namespaces": "NS-", "cgroups": "CG-",
}
_REQUIRED = ("id", "title", "statement", "level", "source")
_SOURCE_REQUIRED = ("document", "section", "version")


class CatalogueError(ValueError):
    """A catalogue file is malformed; the message names the file and the clause."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where a clause comes from, pinned to a version so a reader can check it."""

    document: str
    section: str
    version: str
    url: str | None = None

    def __str__(self) -> str:
        return f"{self.document}, {self.section} ({self.version})"


@dataclass(frozen=True, slots=True)
class Clause:
    """One checkable statement with a stable ID and an RFC 2119 level."""

    id: str
    title: str
    statement: str
    level: Level
    source: Source
    area: str
    tags: tuple[str, ...] = ()
    tour: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Clause:
        """A clause from results.json (reports carry the text, so they never need the catalogue)."""
        s = d["source"]
        return cls(
            id=d["id"], title=d["title"], statement=d["statement"], level=Level(d["level"]),
            source=Source(s["document"], s["section"], s["version"], s.get("url")), area=d["area"],
            tags=tuple(d.get("tags", ())), tour=d.get("tour"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The clause as it appears in results.json."""
        return {
            "id": self.id,
            "title": self.title,
            "statement": self.statement,
            "level": str(self.level),
            "area": self.area,
            "tags": list(self.tags),
            "source": {
                "document": self.source.document,
                "section": self.source.section,
                "version": self.source.version,
                "url": self.source.url,
            },
            "tour": self.tour,
        }


@dataclass(frozen=True, slots=True)
class Catalogue:
    """All clauses, by ID, in catalogue order."""

    clauses: Mapping[str, Clause] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Clause]:
        return iter(self.clauses.values())

    def __len__(self) -> int:
        return len(self.clauses)

    def __contains__(self, clause_id: object) -> bool:
        return clause_id in self.clauses

    def get(self, clause_id: str) -> Clause:
        """The clause with this ID, or a CatalogueError that says which IDs are close."""
        try:
            return self.clauses[clause_id]
        except KeyError:
            close = [c for c in self.clauses if c.split("-")[0] == clause_id.split("-", maxsplit=1)[0]][:5]
            hint = f"; known IDs of that family: {', '.join(close)}" if close else ""
            raise CatalogueError(f"unknown clause {clause_id!r}{hint}") from None

    def select(self, areas: tuple[str, ...] = (), level: Level | None = None) -> list[Clause]:
        """Clauses in the given areas (all when empty) at or above the given level."""
        return [
            c
            for c in self
            if (not areas or c.area in areas) and (level is None or c.level.within(level))
        ]


def _fail(path: Path | str, clause_id: str | None, problem: str) -> CatalogueError:
    where = f"{path}: clause {clause_id}" if clause_id else str(path)
    return CatalogueError(f"{where}: {problem}")


def _parse_clause(path: Path | str, area: str, raw: object, index: int) -> Clause:
    if not isinstance(raw, dict):
        raise _fail(path, f"#{index + 1}", "each clause must be a mapping")
    cid = raw.get("id")
    label = cid if isinstance(cid, str) else f"#{index + 1}"
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise _fail(path, label, f"missing key(s) {', '.join(missing)}")
    unknown = set(raw) - {*_REQUIRED, "title", "tags", "tour"}
    if unknown:
        raise _fail(path, label, f"unknown key(s) {', '.join(sorted(unknown))}")
    if not isinstance(cid, str) or not _ID.match(cid):
        raise _fail(path, label, "id must look like AREA-TOPIC-001 (capitals, digits, dashes, three-digit number)")
    if not cid.startswith(_PREFIX[area]):
        prefix = _PREFIX[area]
        wanted = " or ".join(prefix) if isinstance(prefix, tuple) else prefix
        raise _fail(path, cid, f"an ID in area {area!r} must start with {wanted}")
    try:
        level = Level(raw["level"])
    except ValueError:
        raise _fail(path, cid, f"level must be one of MUST, SHOULD, MAY, not {raw['level']!r}") from None
    for key in ("title", "statement"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise _fail(path, cid, f"{key} must be a non-empty string")
    statement = " ".join(raw["statement"].split())
    if level.value not in statement:
        raise _fail(path, cid, f"the statement must say its level ({level.value}) in capitals")
    src = raw["source"]
    if not isinstance(src, dict) or any(not isinstance(src.get(k), str) for k in _SOURCE_REQUIRED):
        raise _fail(path, cid, f"source needs string keys {', '.join(_SOURCE_REQUIRED)} (and an optional url)")
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _fail(path, cid, "tags must be a list of strings")
    return Clause(
        id=cid,
        title=raw["title"].strip(),
        statement=statement,
        level=level,
        source=Source(str(src["document"]), str(src["section"]), str(src["version"]), src.get("url")),
        area=area,
        tags=tuple(tags),
        tour=raw.get("tour"),
    )


def parse_area(path: Path | str, text: str) -> list[Clause]:
    """Parse one area file; every error names the file and the clause."""
    import yaml  # noqa: PLC0415  (here, so that reports can use Clause without a YAML parser)

    try:
        # libyaml's safe loader where PyYAML has it: 10x faster, and every xdist worker loads the catalogue.
        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise _fail(path, None, f"not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"area", "clauses"}:
        raise _fail(path, None, "must be a mapping with exactly the keys 'area' and 'clauses'")
    area = doc["area"]
    if area not in AREAS:
        raise _fail(path, None, f"area must be one of {', '.join(AREAS)}, not {area!r}")
    if not isinstance(doc["clauses"], list):
        raise _fail(path, None, "'clauses' must be a list")
    return [_parse_clause(path, area, raw, i) for i, raw in enumerate(doc["clauses"])]


def load_catalogue(directory: Path | None = None) -> Catalogue:
    """Load and validate every area file; duplicate IDs across files are an error."""
    clauses: dict[str, Clause] = {}
    files = (
        sorted(directory.glob("*.yaml"))
        if directory is not None
        else sorted(
            (Path(str(p)) for p in resources.files(__package__).iterdir() if p.name.endswith(".yaml")),
            key=lambda p: AREAS.index(p.stem) if p.stem in AREAS else len(AREAS),
        )
    )
    for path in files:
        for clause in parse_area(path, path.read_text(encoding="utf-8")):
            if clause.id in clauses:
                raise _fail(path, clause.id, "duplicate ID (already defined in another area file)")
            clauses[clause.id] = clause
    return Catalogue(_with_tour_links(clauses))


def _with_tour_links(clauses: dict[str, Clause]) -> dict[str, Clause]:
    """Each clause the guided tour shows gets that step (`docs/tour.md#step-...`), unless its YAML names one.

    The tour cites clauses on each step's "Guaranteed by" line; conformance/tour.py keeps that as data,
    and turns the reference into a link where a report is rendered.
    """
    from conformance.tour import clause_refs  # noqa: PLC0415  (here: reports import Clause, not the tour)

    refs = clause_refs()
    return {cid: clause if clause.tour or cid not in refs else replace(clause, tour=refs[cid])
            for cid, clause in clauses.items()}
