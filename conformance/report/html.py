"""report.html: one self-contained page a person can open from a CI artifact, offline.

Everything is inline (CSS, a little vanilla JS, no fonts or images) and a Content-Security-Policy
forbids any fetch, because reports are opened from artifact stores and mail attachments where a
remote script would be both a privacy leak and a hole. Every string from a run (messages, facts) is
escaped by Jinja's autoescape: kernel messages and host facts are not trusted markup.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from conformance import __version__
from conformance.report._io import atomic_write_text
from conformance.report.facts import fact_text, flatten_facts
from conformance.report.model import (
    SEVERITY,
    ClauseRecord,
    ColumnKey,
    Result,
    Results,
    clause_order,
    format_time,
    summarize,
    worst,
)
from conformance.verdicts import Level, Verdict, counts_against

TEMPLATE = "report.html.j2"
_TOOLTIP_MAX = 600  # per result in a cell's tooltip; the full text is in the Failures section
_TOOLTIP_RESULTS = 8  # results listed in one cell's tooltip, most serious first
#: Past this many, the Failures section stops (the matrix still shows every cell): a page with 50,000
#: expanded failures does not open in a browser, and results.json has them all.
FINDINGS_MAX = 2000


@dataclass(frozen=True, slots=True)
class Cell:
    """One matrix cell: the most serious verdict of the results it holds, and where to read more."""

    verdict: Verdict | None
    tooltip: str
    anchor: str | None


@dataclass(frozen=True, slots=True)
class Row:
    """One clause's row of the matrix."""

    clause: ClauseRecord
    cells: list[Cell]
    search: str
    source_href: str | None
    tour_href: str | None


@dataclass(frozen=True, slots=True)
class Finding:
    """One entry of the Failures section (a bad or warn result) with its anchor."""

    anchor: str
    result: Result
    clause: ClauseRecord | None
    label: str


@dataclass(frozen=True, slots=True)
class ReasonGroup:
    """Skips (or known deviations) that share one reason."""

    reason: str
    where: list[str]


def safe_href(url: str | None) -> str | None:
    """``url`` if it is a plain web or relative link, else None.

    Clause sources and tour links end up in ``href``; a ``javascript:`` or ``data:`` URL there would run
    in the reader's browser, so only http, https and relative links become links.
    """
    if not url:
        return None
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return None
    return url if scheme in {"", "http", "https"} else None


def _environment() -> Environment:
    # select_autoescape matches on the template name's ending, so "report.html.j2" needs "j2" listed;
    # default=True keeps escaping on for any template added later under another name.
    return Environment(
        loader=PackageLoader("conformance.report", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _tooltip(results: list[Result]) -> str:
    lines = []
    for r in sorted(results, key=lambda r: -SEVERITY[r.verdict])[:_TOOLTIP_RESULTS]:
        text = f"{r.verdict}: {r.message}" if r.message else str(r.verdict)
        lines.append(text if len(text) <= _TOOLTIP_MAX else text[: _TOOLTIP_MAX - 1] + "…")
        lines.append(f"  {r.test}")
    if len(results) > _TOOLTIP_RESULTS:
        lines.append(f"… and {len(results) - _TOOLTIP_RESULTS} more results")
    return "\n".join(lines)


def _findings(results: Results) -> list[Finding]:
    """Bad results first (unreachable hosts, then by level and clause), then warnings."""
    # A faulty variant that failed was caught, as it should be: only an uncaught one is a finding.
    chosen = [r for r in results.results if counts_against(r.verdict, r.fault is not None)
              or (r.verdict is Verdict.WARN and not r.fault)]
    chosen.sort(key=lambda r: (not r.verdict.is_bad, r.clause is not None,
                               r.level.rank if r.level is not None else -1, r.clause or "",
                               r.host, r.implementation or "", r.fault or "", r.test))
    return [Finding(f"finding-{i}", r, results.clauses.get(r.clause) if r.clause else None, r.matrix_column.label)
            for i, r in enumerate(chosen, 1)]


def _rows(results: Results, columns: list[ColumnKey], findings: list[Finding]) -> list[Row]:
    by_cell: dict[tuple[str, ColumnKey], list[Result]] = {}
    for r in results.results:
        if r.clause is not None:
            by_cell.setdefault((r.clause, r.matrix_column), []).append(r)
    anchors: dict[tuple[str | None, str], str] = {}
    for f in findings:
        anchors.setdefault((f.result.clause, f.result.host if f.result.clause is None else f.label), f.anchor)
    reasons = {h.name: h.reason or "host unreachable" for h in results.hosts if not h.reachable}
    rows = []
    for clause in clause_order(results):
        cells = []
        for col in columns:
            if col.implementation is None:  # placeholder column of an unreachable host
                cells.append(Cell(Verdict.UNREACHABLE, f"unreachable: {reasons.get(col.host, '')}",
                                  anchors.get((None, col.host))))
                continue
            held = by_cell.get((clause.id, col), [])
            verdict = worst(r.verdict for r in held)
            bad = any(counts_against(r.verdict, r.fault is not None) or r.verdict is Verdict.WARN for r in held)
            cells.append(Cell(verdict, _tooltip(held) if held else "not run",
                              anchors.get((clause.id, col.label)) if bad else None))
        rows.append(Row(clause, cells, f"{clause.id} {clause.title}".lower(),
                        safe_href(clause.source.url), safe_href(clause.tour)))
    return rows


def _grouped(results: Results, verdict: Verdict) -> list[ReasonGroup]:
    groups: dict[str, list[str]] = {}
    for r in results.results:
        if r.verdict is verdict:
            groups.setdefault(r.message.strip() or "(no reason given)", []).append(
                f"{r.clause} [{r.column.label}]")
    return [ReasonGroup(reason, sorted(where)) for reason, where in
            sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))]


def _areas(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    grouped: dict[str, list[Row]] = {}
    for row in rows:
        grouped.setdefault(row.clause.area, []).append(row)
    return list(grouped.items())


def render_html(results: Results) -> str:
    """The report page as a string."""
    columns = results.columns()
    findings = _findings(results)
    shown = findings[:FINDINGS_MAX]
    rows = _rows(results, columns, shown)
    summary = summarize(results)
    facts: Mapping[str, list[tuple[str, str]]] = {
        h.name: [(k, fact_text(v)) for k, v in flatten_facts(h.facts).items()] for h in results.hosts
    }
    run = results.run
    return _environment().get_template(TEMPLATE).render(
        run=run,
        started=format_time(run.started),
        stopped=format_time(run.stopped),
        elapsed=f"{(run.stopped - run.started).total_seconds():.0f} s",
        command=shlex.join(run.command),
        summary=summary,
        levels=list(Level),
        verdicts=list(Verdict),
        columns=columns,
        areas=_areas(rows),
        findings=shown,
        findings_left_out=max(0, len(findings) - FINDINGS_MAX),
        bad_count=sum(1 for f in findings if f.result.verdict.is_bad),
        warn_count=sum(1 for f in findings if f.result.verdict is Verdict.WARN),
        hosts=results.hosts,
        facts=facts,
        skips=_grouped(results, Verdict.SKIP),
        xfails=_grouped(results, Verdict.XFAIL),
        severity=SEVERITY,
        safe_href=safe_href,
        report_version=__version__,
    )


def write_html(results: Results, path: Path) -> None:
    """Write report.html atomically."""
    atomic_write_text(Path(path), render_html(results))
