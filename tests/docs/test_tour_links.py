"""From a clause to the tour step that shows it: `conformance explain`, the catalogue, results.json and report.html."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from conformance.clauses import load_catalogue
from conformance.report.html import render_html
from conformance.report.model import Results
from conformance.report.validate import validate
from conformance.results import Collector, document
from conformance.tour import (
    URL_ENV,
    TourIndex,
    TourIndexError,
    TourStep,
    clause_refs,
    document_url,
    load_index,
    parse_index,
    resolve,
)
from conformance.verdicts import Level
from tests.conftest import run_cli
from tests.docs.runtour import TOUR

SHOWN = "OVL-WHITEOUT-005"  # cited in step-union first, and again in step-container-layer
NOT_SHOWN = "CG-CPU-005"  # a timing clause the tour does not show


def test_explain_points_at_each_step_that_shows_the_clause() -> None:
    done = run_cli("explain", SHOWN, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Shown in the tour: docs/tour.md#step-union  (3. A union filesystem" in done.stdout
    assert "Shown in the tour: docs/tour.md#step-container-layer" in done.stdout
    assert "Shown in the tour" not in run_cli("explain", NOT_SHOWN, timeout=120).stdout


def test_explain_json_carries_the_steps_and_the_link() -> None:
    done = run_cli("explain", SHOWN, "--json", timeout=120)
    data = json.loads(done.stdout)
    assert data["tour_steps"] == ["docs/tour.md#step-union", "docs/tour.md#step-container-layer"]
    assert data["tour"] == "docs/tour.md#step-union"
    assert data["tour_url"] == f"{TOUR.as_uri()}#step-union", "from a checkout, the link opens its docs/tour.md"


def test_the_link_base_is_configurable() -> None:
    """CONFORMANCE_TOUR_URL wins; without it a checkout's file:// URL; the anchor replaces any fragment."""
    assert document_url({URL_ENV: "https://example.org/cc/blob/main/docs/tour.md"}).startswith("https://")
    assert document_url({}) == TOUR.as_uri()
    step = TourStep("step-union", "3. A union filesystem", (SHOWN,))
    assert step.ref == "docs/tour.md#step-union"
    assert resolve(step.ref, "https://example.org/tour.md#old") == "https://example.org/tour.md#step-union"
    assert resolve(step.ref) == f"{TOUR.as_uri()}#step-union"
    assert resolve("https://example.org/elsewhere#x") == "https://example.org/elsewhere#x"
    assert resolve(None) is None


def test_the_catalogue_gives_each_shown_clause_its_first_step() -> None:
    """As a repository path, the same on every machine: runs from different checkouts merge cleanly."""
    catalogue = load_catalogue()
    assert clause_refs()[SHOWN] == "docs/tour.md#step-union"
    assert catalogue.get(SHOWN).tour == "docs/tour.md#step-union"
    assert catalogue.get(NOT_SHOWN).tour is None
    cited = {c for step in load_index().steps for c in step.clauses}
    assert {c.id for c in catalogue if c.tour} == cited


def test_a_broken_index_says_how_to_regenerate_it() -> None:
    with pytest.raises(TourIndexError, match="--write-index"):
        parse_index('{"steps": [{"anchor": "step-x"}]}')
    index = TourIndex((TourStep("step-a", "A", ("X-001",)), TourStep("step-b", "B", ("X-001", "Y-001"))))
    assert [s.anchor for s in index.steps_for("X-001")] == ["step-a", "step-b"]
    assert {k: v.anchor for k, v in index.first_step().items()} == {"X-001": "step-a", "Y-001": "step-b"}


def _results() -> Results:
    """A run's results.json as the plugin writes it, from the catalogue."""
    collector = Collector()
    for clause_id in (SHOWN, NOT_SHOWN):
        clause = load_catalogue().get(clause_id)
        collector.add({"clause": clause_id, "test": f"conformance/suite/x.py::test_{clause_id}[local-ref]",
                       "host": "local", "implementation": "ref", "fault": None, "level": str(clause.level),
                       "area": clause.area, "verdict": "pass", "duration": 0.1, "message": "", "expected": None,
                       "actual": None, "context": {}})
    now = dt.datetime.now(dt.UTC)
    doc = document(run_id="20261206T000000Z_abcdef", started=now, stopped=now, command=["conformance", "run"],
                   level=Level.MUST, options={}, seeds={}, catalogue=load_catalogue(),
                   hosts=[{"name": "local", "spec": "local://", "reachable": True, "reason": None, "facts": {}}],
                   collector=collector)
    doc["summary"] = Results.from_dict({**doc, "summary": {}}).to_dict()["summary"]
    validate(doc, "results.json")
    assert doc["clauses"][SHOWN]["tour"] == "docs/tour.md#step-union"
    return Results.from_dict(doc)


def test_the_html_report_links_a_clause_to_its_tour_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The link is made where the report is rendered: the published tour when configured, else the checkout's."""
    results = _results()
    assert f'href="{TOUR.as_uri()}#step-union"' in render_html(results)
    monkeypatch.setenv(URL_ENV, "https://example.org/cc/blob/main/docs/tour.md")
    page = render_html(results)
    assert 'href="https://example.org/cc/blob/main/docs/tour.md#step-union"' in page
    row = page[page.index(f'href="#clause-{NOT_SHOWN}"'):]
    assert "Guided tour step" not in row[: row.index("</th>")], "no tour link where the tour shows nothing"


def test_a_file_link_from_a_checkout_stays_a_link() -> None:
    """Without a published URL the link is the checkout's file; script URLs still are not links."""
    from conformance.report.html import safe_href

    assert safe_href(f"{TOUR.as_uri()}#step-union") == f"{TOUR.as_uri()}#step-union"
    assert safe_href("javascript:alert(1)") is None
