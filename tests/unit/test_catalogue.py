"""The catalogue loads, rejects malformed files with a message naming file and clause, and every clause
is checked by a test with a faulty variant that breaks it."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance import drivers
from conformance.clauses import CatalogueError, load_catalogue, parse_area
from conformance.suite_index import tests_by_clause as clause_index
from conformance.verdicts import Level

GOOD = """
area: host
clauses:
  - id: HOST-EXAMPLE-001
    title: an example
    statement: The host MUST do a thing.
    level: MUST
    source: {document: doc, section: sec, version: v1}
"""


def test_catalogue_loads_and_has_twelve_or_more_host_clauses() -> None:
    catalogue = load_catalogue()
    assert len(catalogue.select(("host",))) >= 12


def test_every_clause_names_its_level_and_a_source() -> None:
    for clause in load_catalogue():
        assert clause.level.value in clause.statement, clause.id
        assert clause.source.document and clause.source.section and clause.source.version, clause.id


def test_good_file_parses() -> None:
    [clause] = parse_area("host.yaml", GOOD)
    assert clause.id == "HOST-EXAMPLE-001" and clause.level is Level.MUST and clause.area == "host"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("level: MUST", "level: OUGHT"), "host.yaml: clause HOST-EXAMPLE-001: level must be one of"),
        (("id: HOST-EXAMPLE-001", "id: host-example-1"), "host.yaml: clause host-example-1: id must look like"),
        (("id: HOST-EXAMPLE-001", "id: OVL-EXAMPLE-001"), "must start with HOST-"),
        (("    source: {document: doc, section: sec, version: v1}\n", ""), "missing key(s) source"),
        (("MUST do", "must do"), "the statement must say its level"),
        (("area: host", "area: nowhere"), "area must be one of"),
        (("title: an example", "title: an example\n    colour: red"), "unknown key(s) colour"),
    ],
)
def test_malformed_clause_names_file_and_clause(change: tuple[str, str], message: str) -> None:
    with pytest.raises(CatalogueError, match=None) as info:
        parse_area("host.yaml", GOOD.replace(*change))
    assert message in str(info.value)


def test_duplicate_ids_across_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "host.yaml").write_text(GOOD)
    (tmp_path / "more.yaml").write_text(GOOD)
    with pytest.raises(CatalogueError, match="duplicate ID"):
        load_catalogue(tmp_path)


def test_unknown_clause_lookup_suggests_the_family() -> None:
    with pytest.raises(CatalogueError, match="known IDs of that family: HOST-"):
        load_catalogue().get("HOST-NOPE-001")


def test_every_test_names_a_known_clause() -> None:
    catalogue = load_catalogue()
    unknown = {cid: tests for cid, tests in clause_index().items() if cid not in catalogue}
    assert unknown == {}


def test_every_must_clause_has_a_test() -> None:
    index = clause_index()
    untested = [c.id for c in load_catalogue() if c.level is Level.MUST and c.id not in index]
    assert untested == []


def test_every_tested_clause_has_a_faulty_variant() -> None:
    """Teeth: for each clause with a test some driver has a faulty variant that must break it."""
    faults = {cid for d in drivers.load_all().values() for cid in d.faults()}
    missing = sorted(set(clause_index()) - faults)
    assert missing == []
