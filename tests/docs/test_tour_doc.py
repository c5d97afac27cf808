"""docs/tour.md as a document: its steps cite real clauses, its index is current, its table is the runner's.

None of this runs a command; tests/docs/test_tour.py does.
"""

from __future__ import annotations

import json
import re

from conformance.clauses import load_catalogue
from conformance.tour import load_index
from tests.docs.normalise import rules_table
from tests.docs.runtour import INDEX, ROOT, TOUR
from tests.docs.tourdoc import index_of, parse_tour

#: Steps that set up and take down, and show no guarantee of their own.
NO_CLAUSES = {"step-setup", "step-next"}


def test_every_step_cites_clauses_of_the_catalogue() -> None:
    """Each step but the first and the last names clauses on its Guaranteed by line, all of them real."""
    catalogue = load_catalogue()
    doc = parse_tour(TOUR)
    assert len(doc.steps) >= 8
    for step in doc.steps:
        assert bool(step.clauses) == (step.anchor not in NO_CLAUSES), step.anchor
        unknown = [c for c in step.clauses if c not in catalogue]
        assert not unknown, f"{TOUR}:{step.line} step {step.anchor} cites unknown clauses {unknown}"
        assert len(set(step.clauses)) == len(step.clauses), f"step {step.anchor} cites a clause twice"


def test_every_step_has_commands_and_the_tour_cleans_up() -> None:
    doc = parse_tour(TOUR)
    for step in doc.steps:
        assert any(c.step == step.anchor for c in doc.commands), f"step {step.anchor} runs nothing"
    cleanup = [c.text for c in doc.commands if c.cleanup]
    assert any('rm -rf "$tour"' in c for c in cleanup), cleanup
    assert any("docker rmi conformance-tour:1" in c for c in cleanup)
    assert any("podman rmi conformance-tour:1" in c for c in cleanup)


def test_the_index_is_generated_from_the_tour() -> None:
    """conformance/tour_index.json is what `python -m tests.docs.runtour --write-index` makes of the tour now."""
    current = index_of(parse_tour(TOUR))
    shipped = json.loads(INDEX.read_text(encoding="utf-8"))
    assert shipped == current, "docs/tour.md changed: run `python -m tests.docs.runtour --write-index`"
    assert [s.anchor for s in load_index().steps] == [s["anchor"] for s in current["steps"]]


def test_the_tour_shows_the_runners_normalisation_table() -> None:
    assert rules_table() in TOUR.read_text(encoding="utf-8")


def test_every_tour_anchor_a_link_points_at_exists() -> None:
    """Links into the tour (its own `(#step-...)`, and `tour.md#...` anywhere in the docs) name steps that exist."""
    anchors = {s.anchor for s in parse_tour(TOUR).steps}
    linked = re.findall(r"\]\(#(step-[a-z0-9-]+)\)", TOUR.read_text(encoding="utf-8"))
    assert set(linked) == anchors, "the tour's list of steps links every step"
    for path in (TOUR, ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        for anchor in re.findall(r"tour\.md#([A-Za-z0-9_-]+)", path.read_text(encoding="utf-8")):
            assert anchor in anchors, f"{path} links to tour.md#{anchor}"


def test_the_readme_points_learners_at_the_tour() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Learn" in readme and "(docs/tour.md)" in readme
