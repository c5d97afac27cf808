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
    HostRecord,
    Result,
    Results,
    clause_order,
    format_time,
    summarize,
    worst,
)
from conformance.report.recap import provisioning_text
from conformance.tour import resolve as tour_link  # standard library only: where docs/tour.md is read from
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
class HostGroup:
    """The matrix's host header over that host's columns: what makes hosts' columns differ at a glance."""

    name: str
    span: int
    kernel: str
    cgroup: str
    status: str  # reachable, unreachable, error


@dataclass(frozen=True, slots=True)
class HostView:
    """One row of the Hosts table: the record and what the page says about it."""

    record: HostRecord
    status: str
    status_reason: str
    kernel: str
    cgroup: str
    selection: str
    provisioning: str  # idempotent, not-idempotent, unchecked, none
    provisioning_text: str


@dataclass(frozen=True, slots=True)
class ReasonGroup:
    """Skips (or known deviations) that share one reason."""

    reason: str
    where: list[str]


def safe_href(url: str | None) -> str | None:
    """``url`` if it is a plain web, file or relative link, else None.

    Clause sources and tour links end up in ``href``; a ``javascript:`` or ``data:`` URL there would run
    in the reader's browser, so only http, https, file and relative links become links. file: is for
    the tour link of a report rendered from a checkout (conformance/tour.py): it opens the checkout's
    docs/tour.md, and a browser only follows it from a page that is itself a file.
    """
    if not url:
        return None
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return None
    return url if scheme in {"", "http", "https", "file"} else None


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


def not_selected(host: HostRecord | None, area: str, implementation: str | None) -> str | None:
    """Why a clause did not run on a host whose selection (inventory vars, per-host run) left it out."""
    selection = host.selection if host is not None else None
    if not selection:
        return None
    source = "inventory var" if selection.get("source") == "inventory" else "this host's run:"
    if selection.get("areas") is not None and area not in selection["areas"]:
        return f"not selected for this host by {source} conformance_areas ({', '.join(selection['areas']) or 'none'})"
    if implementation and selection.get("impls") is not None and implementation not in selection["impls"]:
        return f"not selected for this host by {source} conformance_impls ({', '.join(selection['impls']) or 'none'})"
    return None


def _own_records(results: Results) -> dict[str, list[Result]]:
    """Each host's records without a clause (unreachable, failed run), by host."""
    own: dict[str, list[Result]] = {}
    for r in results.results:
        if r.clause is None:
            own.setdefault(r.host, []).append(r)
    return own


def _rows(results: Results, columns: list[ColumnKey], findings: list[Finding]) -> list[Row]:
    by_cell: dict[tuple[str, ColumnKey], list[Result]] = {}
    for r in results.results:
        if r.clause is not None:
            by_cell.setdefault((r.clause, r.matrix_column), []).append(r)
    anchors: dict[tuple[str | None, str], str] = {}
    for f in findings:
        anchors.setdefault((f.result.clause, f.result.host if f.result.clause is None else f.label), f.anchor)
    reasons = {h.name: h.reason or "host unreachable" for h in results.hosts if not h.reachable}
    own = _own_records(results)
    hosts = {h.name: h for h in results.hosts}
    rows = []
    for clause in clause_order(results):
        cells = []
        for col in columns:
            if col.implementation is None:  # placeholder column of a host that was not checked
                own_held = own.get(col.host, [])
                own_verdict = worst(r.verdict for r in own_held) or Verdict.UNREACHABLE
                text = own_held[0].message if own_held else reasons.get(col.host, "")
                cells.append(Cell(own_verdict, f"{own_verdict}: {text}", anchors.get((None, col.host))))
                continue
            held = by_cell.get((clause.id, col), [])
            verdict = worst(r.verdict for r in held)
            bad = any(counts_against(r.verdict, r.fault is not None) or r.verdict is Verdict.WARN for r in held)
            empty = not_selected(hosts.get(col.host), clause.area, col.implementation) or "not run"
            cells.append(Cell(verdict, _tooltip(held) if held else empty,
                              anchors.get((clause.id, col.label)) if bad else None))
        rows.append(Row(clause, cells, f"{clause.id} {clause.title}".lower(),
                        safe_href(clause.source.url), safe_href(tour_link(clause.tour))))
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


def _fact(facts: Mapping[str, object], *path: str) -> str:
    node: object = facts
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return "?"
        node = node[part]
    return fact_text(node)


def _status(host: HostRecord, own: list[Result]) -> tuple[str, str]:
    """reachable, unreachable or error (its run failed), and why."""
    if not host.reachable:
        return "unreachable", host.reason or (own[0].message if own else "")
    failed = [r for r in own if r.verdict is not Verdict.UNREACHABLE]
    if failed:
        return "error", failed[0].message
    if any(r.verdict is Verdict.UNREACHABLE for r in own):
        return "unreachable", own[0].message
    return "reachable", ""


def _selection_text(host: HostRecord) -> str:
    selection = host.selection
    if not selection:
        return "as the run selected"
    areas = selection.get("areas")
    impls = selection.get("impls")
    source = "inventory vars" if selection.get("source") == "inventory" else "its own run"
    return (f"areas {', '.join(areas) if areas is not None else 'all'}; implementations "
            f"{', '.join(impls) if impls is not None else 'all'}; level {selection.get('level')} ({source})")


def host_views(results: Results) -> list[HostView]:
    """The Hosts table's rows."""
    own = _own_records(results)
    views = []
    for h in results.hosts:
        status, why = _status(h, own.get(h.name, []))
        state, words = provisioning_text(h.provisioning)
        views.append(HostView(h, status, why, _fact(h.facts, "kernel", "release"), _fact(h.facts, "cgroup", "mode"),
                              _selection_text(h), state, words))
    return views


def host_groups(columns: list[ColumnKey], views: list[HostView]) -> list[HostGroup]:
    """Consecutive matrix columns of one host under one header naming its kernel and cgroup mode."""
    by_name = {v.record.name: v for v in views}
    groups: list[HostGroup] = []
    for col in columns:
        if groups and groups[-1].name == col.host:
            last = groups[-1]
            groups[-1] = HostGroup(last.name, last.span + 1, last.kernel, last.cgroup, last.status)
            continue
        view = by_name.get(col.host)
        groups.append(HostGroup(col.host, 1, view.kernel if view else "?", view.cgroup if view else "?",
                                view.status if view else "reachable"))
    return groups


def render_html(results: Results) -> str:
    """The report page as a string."""
    columns = results.columns()
    findings = _findings(results)
    shown = findings[:FINDINGS_MAX]
    rows = _rows(results, columns, shown)
    summary = summarize(results)
    views = host_views(results)
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
        host_groups=host_groups(columns, views),
        host_views=views,
        host_status={v.record.name: v.status for v in views},
        merge_notes=[str(n) for n in results.run.options.get("merge_notes", []) or []],
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
