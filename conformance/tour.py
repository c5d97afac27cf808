"""Which step of the guided tour (docs/tour.md) shows a clause at work, and the link to that step.

The tour is documentation, outside the installed package, so what the package needs from it is kept
in tour_index.json beside this module: each step's anchor and title and the clauses it cites on its
"Guaranteed by" line. The index is generated from the tour (`python -m tests.docs.runtour
--write-index`), and tests/docs/test_tour_doc.py fails when the two disagree.

The catalogue gives each clause the tour step that shows it first as a path in the repository,
`docs/tour.md#step-...` (Clause.tour), and results.json keeps it so: the same on every machine, so runs
made from different checkouts, or from the wheel a fleet host installs, merge without a clash. A link
is made from it where a report is rendered (`resolve`), since it must work where it is read: a report
is opened from a CI artifact or a mail, far from the checkout, where a relative `docs/tour.md` leads
nowhere. The document's address is the first of:

1. the environment variable CONFORMANCE_TOUR_URL, the tour's own URL (for instance
   https://git.example.org/container-conformance/blob/main/docs/tour.md), for a published copy: set
   it in CI, where reports are read as artifacts;
2. the package's `Tour` project URL (`[project.urls] Tour = "..."` in pyproject.toml), once the
   project has a public home;
3. the checkout's docs/tour.md as a file:// URL, when the package runs from a checkout (the usual
   case: bin/bootstrap installs it editable); it opens on the machine that rendered the report;
4. else the relative `docs/tour.md#step-...`, readable from the repository root.

`conformance explain` prints the repository path, which reads the same everywhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

DOCUMENT = "docs/tour.md"
URL_ENV = "CONFORMANCE_TOUR_URL"
PROJECT_URL_LABEL = "Tour"
_DISTRIBUTION = "container-conformance"
_CHECKOUT_TOUR = Path(__file__).resolve().parent.parent / DOCUMENT


class TourIndexError(ValueError):
    """tour_index.json is malformed; regenerate it from docs/tour.md."""


@dataclass(frozen=True, slots=True)
class TourStep:
    """One step of the tour: where it is and the clauses it cites."""

    anchor: str
    title: str
    clauses: tuple[str, ...]

    @property
    def ref(self) -> str:
        """The step as a path in the repository: docs/tour.md#step-..."""
        return f"{DOCUMENT}#{self.anchor}"


@dataclass(frozen=True, slots=True)
class TourIndex:
    """The tour's steps in order."""

    steps: tuple[TourStep, ...]

    def steps_for(self, clause_id: str) -> list[TourStep]:
        """Every step that cites the clause, in tour order (the first one is where it is shown first)."""
        return [s for s in self.steps if clause_id in s.clauses]

    def first_step(self) -> dict[str, TourStep]:
        """Clause ID -> the first step that cites it."""
        found: dict[str, TourStep] = {}
        for step in self.steps:
            for clause_id in step.clauses:
                found.setdefault(clause_id, step)
        return found


def parse_index(text: str) -> TourIndex:
    """The index from its JSON text, checked enough that a hand edit gone wrong says so."""
    try:
        doc = json.loads(text)
        steps = tuple(TourStep(str(s["anchor"]), str(s["title"]), tuple(str(c) for c in s["clauses"]))
                      for s in doc["steps"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TourIndexError(f"tour_index.json: {exc!r}; regenerate it: python -m tests.docs.runtour "
                             "--write-index") from None
    return TourIndex(steps)


def load_index() -> TourIndex:
    """The index shipped with the package."""
    return parse_index(resources.files(__package__).joinpath("tour_index.json").read_text(encoding="utf-8"))


def _project_url() -> str | None:
    try:
        entries = metadata.metadata(_DISTRIBUTION).get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in entries:
        label, _, url = str(entry).partition(",")
        if label.strip().lower() == PROJECT_URL_LABEL.lower() and url.strip():
            return url.strip()
    return None


def document_url(environ: Mapping[str, str] | None = None) -> str:
    """Where docs/tour.md is read from, by the order in the module's docstring."""
    configured = (os.environ if environ is None else environ).get(URL_ENV, "").strip()
    if configured:
        return configured
    return _project_url() or (_CHECKOUT_TOUR.as_uri() if _CHECKOUT_TOUR.is_file() else DOCUMENT)


def resolve(ref: str | None, base: str | None = None) -> str | None:
    """A tour reference (`docs/tour.md#step-...`) as a link to the document at `base` (default: document_url()).

    Anything else (None, or a URL a clause's YAML gives itself) is returned as it is.
    """
    if not ref or not ref.startswith(f"{DOCUMENT}#"):
        return ref
    return f"{(base or document_url()).split('#', 1)[0]}#{ref.split('#', 1)[1]}"


def clause_refs(index: TourIndex | None = None) -> dict[str, str]:
    """Clause ID -> the first tour step that shows it, as `docs/tour.md#step-...`."""
    chosen = load_index() if index is None else index
    return {clause_id: step.ref for clause_id, step in chosen.first_step().items()}
