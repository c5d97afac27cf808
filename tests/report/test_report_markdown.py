"""summary.md: failures first, and never over GitHub's 1 MiB step summary limit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from conformance.report.markdown import render_summary, write_summary
from conformance.report.model import Results
from conformance.verdicts import Verdict

MIB = 1024 * 1024


def test_sample_summary(tmp_path: Path, sample: Results) -> None:
    path = tmp_path / "summary.md"
    write_summary(sample, path)
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert first.startswith("# ❌ Conformant: no")
    assert "2 fail" in first
    assert text.index("## Failures") < text.index("## Warnings") < text.index("## Counts per area")
    assert text.index("## Counts per area") < text.index("## Skip reasons")
    assert "OVL-WHITEOUT-001" in text and "host `ghost`" in text
    assert "<script>" not in text
    assert "CAP_SYS_ADMIN" in text


def test_huge_run_stays_under_one_mib_with_failures_first(sample: Results) -> None:
    template = next(r for r in sample.results if r.verdict is Verdict.FAIL)
    fails = [replace(template, test=f"{template.test}#{i}", message="x" * 500 + f" {i}") for i in range(50_000)]
    passes = [r for r in sample.results if r.verdict is Verdict.PASS]
    big = replace(sample, results=(*passes, *fails))
    text = render_summary(big)
    assert len(text.encode("utf-8")) < MIB
    assert "more results in results.json/report.html" in text
    assert text.index("## Failures (50000)") < text.index("## Counts per area")
    assert "| 50000 |" in text.split("## Counts per area")[1]  # all counted even though not all listed


def test_clean_run(sample: Results) -> None:
    good = tuple(r for r in sample.results if not r.verdict.is_bad and r.verdict is not Verdict.WARN and not r.fault)
    clean = replace(sample, hosts=tuple(h for h in sample.hosts if h.reachable), results=good)
    text = render_summary(clean)
    assert text.startswith("# ✅ Conformant: yes")
    assert "No failures, errors, timeouts or unreachable hosts." in text
