"""summary.md for a CI step summary: what failed, first, in a page that fits the CI's size limit.

GitHub rejects a step summary over 1 MiB (and a huge one is unreadable anyway), so every table is
cut to a byte budget and says how many rows it left out; results.json and report.html have them all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from conformance.report._io import atomic_write_text
from conformance.report.model import HostRecord, Result, Results, summarize
from conformance.report.recap import provisioning_text
from conformance.verdicts import Verdict

#: Hard ceiling of the file in bytes (GitHub's step summary limit is 1 MiB); kept below it with margin.
MAX_BYTES = 1024 * 1024 - 16 * 1024
MESSAGE_CHARS = 160  # one table cell: enough for the clause/path/expected/actual sentence
MAX_ROWS = 1000  # per table, whatever the budget: past this a summary is not read, it is scrolled
PROVISIONING_BYTES = 128 * 1024  # the provisioning section, diffs included
DIFF_LINES = 60  # per changed task's diff; report.html has them whole
NOTES_MAX = 50  # merge notes listed
_RESERVE = 4096  # section headings and "N more" lines, written after the budgeted tables

_BAD_FIRST = (Verdict.UNREACHABLE, Verdict.FAIL, Verdict.ERROR, Verdict.TIMEOUT)
_NO_AREA = "(reachability)"


@dataclass(slots=True)
class _Table:
    """A markdown table being filled up to a byte budget."""

    header: list[str]
    budget: int
    rows: list[str]
    left_out: int = 0
    used: int = 0

    @property
    def full(self) -> bool:
        """Once a row did not fit, the rest are only counted (rows stay in order, no gaps)."""
        return self.left_out > 0 or len(self.rows) >= MAX_ROWS

    def skip(self) -> None:
        """Count a row without formatting it."""
        self.left_out += 1

    def add(self, cells: Sequence[str]) -> None:
        line = "| " + " | ".join(cells) + " |"
        size = len(line.encode("utf-8")) + 1
        if self.full or self.used + size > self.budget:
            self.left_out += 1
            return
        self.rows.append(line)
        self.used += size

    def render(self) -> list[str]:
        if not self.rows and not self.left_out:
            return []
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header), *self.rows]
        if self.left_out:
            lines += ["", f"{self.left_out} more results in results.json/report.html"]
        return lines


def cell(text: str | None, limit: int = MESSAGE_CHARS) -> str:
    """Text safe in one table cell: one line, pipes escaped, no live HTML, at most ``limit`` chars."""
    flat = " ".join((text or "").split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _counts_line(results: Results) -> str:
    s = summarize(results)
    counts = ", ".join(f"{s.by_verdict[v]} {v}" for v in Verdict if s.by_verdict[v])
    return f"{s.total} results: {counts}" if counts else "no results"


def _host_state(results: Results, host: HostRecord) -> str:
    if not host.reachable:
        return " (unreachable)"
    own = [r for r in results.results if r.clause is None and r.host == host.name]
    if any(r.verdict is Verdict.ERROR for r in own):
        return " (run failed)"
    return " (unreachable)" if own else ""


def _head(results: Results) -> list[str]:
    s = summarize(results)
    run = results.run
    mark = "✅" if s.conformant else "❌"
    hosts = ", ".join(f"`{cell(h.name, 60)}`" + _host_state(results, h) for h in results.hosts)
    return [
        f"# {mark} Conformant: {'yes' if s.conformant else 'no'} ({cell(_counts_line(results), 400)})",
        "",
        f"Run `{cell(run.id, 80)}` at level **{run.level}**, suite {cell(run.suite_version, 40)}"
        + (f" ({cell(run.git_sha[:12])})" if run.git_sha else "") + f"; hosts: {hosts or 'none'}.",
        "",
    ]


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text``, so a diff cannot close it early."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _provisioning(results: Results) -> list[str]:
    """A line per host from the provisioning recap; a non-idempotent host's changed tasks with their diffs."""
    hosts = [h for h in results.hosts if h.provisioning is not None]
    if not hosts:
        return []
    lines = ["## Provisioning", ""]
    used = 0
    for h in results.hosts:
        state, words = provisioning_text(h.provisioning)
        mark = {"idempotent": "✅", "not-idempotent": "❌"}.get(state, "⚪")
        lines.append(f"- {mark} `{cell(h.name, 60)}`: {cell(words, 300)}")
        tasks = (h.provisioning or {}).get("changed_tasks") or []
        for task in tasks:
            if used > PROVISIONING_BYTES:
                lines.append("  - … more changed tasks in results.json/report.html")
                break
            lines.append(f"  - `{cell(str(task.get('task')), 200)}`")
            diff = task.get("diff")
            if diff:
                diff_lines = str(diff).splitlines()
                shown = "\n".join(diff_lines[:DIFF_LINES]) + (
                    f"\n… ({len(diff_lines) - DIFF_LINES} more lines)" if len(diff_lines) > DIFF_LINES else "")
                fence = _fence(shown)
                block = ["", "    <details><summary>diff</summary>", "", f"    {fence}diff",
                         *(f"    {line}" for line in shown.splitlines()), f"    {fence}", "", "    </details>", ""]
                lines += block
                used += sum(len(b.encode("utf-8")) + 1 for b in block)
    return [*lines, ""]


def _notes(results: Results) -> list[str]:
    """What the merge had to decide (a host renamed, a folder without results) in the merged report's words."""
    notes = [str(n) for n in results.run.options.get("merge_notes", []) or []]
    if not notes:
        return []
    lines = ["## Merge notes", "", *(f"- {cell(n, 400)}" for n in notes[:NOTES_MAX])]
    if len(notes) > NOTES_MAX:
        lines.append(f"- … and {len(notes) - NOTES_MAX} more in results.json")
    return [*lines, ""]


def _result_cells(results: Results, r: Result) -> list[str]:
    clause = results.clauses.get(r.clause) if r.clause else None
    name = f"`{r.clause}` {cell(clause.title, 60)}" if clause else f"host `{cell(r.host, 60)}`"
    return [name, str(r.level or "—"), f"`{cell(r.column.label, 80)}`", str(r.verdict), cell(r.message)]


def _area_counts(results: Results) -> list[str]:
    areas: dict[str, dict[Verdict, int]] = {}
    for r in results.results:
        counts = areas.setdefault(r.area or _NO_AREA, dict.fromkeys(Verdict, 0))
        counts[r.verdict] += 1
    if not areas:
        return []
    lines = ["## Counts per area", "", "| Area | " + " | ".join(Verdict) + " | total |",
             "|---|" + "---:|" * (len(Verdict) + 1)]
    for area, counts in sorted(areas.items()):
        lines.append(f"| {cell(area, 60)} | " + " | ".join(str(counts[v]) for v in Verdict)
                     + f" | {sum(counts.values())} |")
    return [*lines, ""]


def _sorted(results: Results, verdicts: Sequence[Verdict]) -> list[Result]:
    rank = {v: i for i, v in enumerate(verdicts)}
    chosen = [r for r in results.results if r.verdict in rank]
    chosen.sort(key=lambda r: (rank[r.verdict], r.level.rank if r.level else -1, r.clause or "", r.column.label))
    return chosen


def render_summary(results: Results, max_bytes: int = MAX_BYTES) -> str:
    """The summary as markdown, never more than ``max_bytes`` bytes of UTF-8."""
    head = _head(results) + _provisioning(results) + _notes(results)
    areas = _area_counts(results)
    fixed = len("\n".join(head + areas).encode("utf-8"))
    remaining = max(0, max_bytes - fixed - _RESERVE)

    bad = _Table(["Clause", "Level", "Host-impl", "Verdict", "Message"], int(remaining * 0.6), [])
    for r in _sorted(results, _BAD_FIRST):
        if bad.full:
            bad.skip()
        else:
            bad.add(_result_cells(results, r))
    remaining -= bad.used
    warn = _Table(["Clause", "Level", "Host-impl", "Verdict", "Message"], int(remaining * 0.6), [])
    for r in _sorted(results, (Verdict.WARN,)):
        if warn.full:
            warn.skip()
        else:
            warn.add(_result_cells(results, r))
    remaining -= warn.used

    reasons: dict[str, list[Result]] = {}
    for r in results.results:
        if r.verdict in (Verdict.SKIP, Verdict.XFAIL):
            reasons.setdefault(f"{r.verdict}: {r.message.strip() or '(no reason given)'}", []).append(r)
    skips = _Table(["Count", "Reason", "Clauses"], remaining, [])
    for reason, held in sorted(reasons.items(), key=lambda item: (-len(item[1]), item[0])):
        ids = sorted({r.clause or "" for r in held})
        shown = ", ".join(ids[:8]) + (f", … ({len(ids) - 8} more)" if len(ids) > 8 else "")
        skips.add([str(len(held)), cell(reason, 200), cell(shown, 200)])

    lines = list(head)
    for title, table, empty in (
        ("Failures", bad, "No failures, errors, timeouts or unreachable hosts."),
        ("Warnings", warn, f"No failures below level {results.run.level}."),
    ):
        lines += [f"## {title} ({len(table.rows) + table.left_out})", ""]
        lines += [*table.render(), ""] if table.rows or table.left_out else [empty, ""]
    lines += areas
    if skips.rows or skips.left_out:
        lines += ["## Skip reasons", "", *skips.render(), ""]
    text = "\n".join(lines)
    return _clip(text, max_bytes)


def _clip(text: str, max_bytes: int) -> str:
    """Last line of defence for the size guarantee; the budgets above should make it a no-op."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    note = "\n\n(summary cut at the size limit; see results.json/report.html)\n"
    cut = data[: max_bytes - len(note.encode("utf-8"))].decode("utf-8", errors="ignore")
    return cut[: cut.rfind("\n") + 1 or len(cut)] + note


def write_summary(results: Results, path: Path) -> None:
    """Write summary.md atomically (under 1 MiB, failures first)."""
    atomic_write_text(Path(path), render_summary(results))
