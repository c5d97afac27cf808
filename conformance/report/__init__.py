"""Reports derived from one canonical results.json: junit.xml, report.html, summary.md, merge and diff.

report/ works from results data alone: from the package it imports only ``conformance.verdicts``
and the Clause data type of ``conformance.clauses``, so reports can be rebuilt, merged and diffed
on a machine that has never seen a host (or the drivers that talked to it).
"""

from __future__ import annotations

from conformance.clauses import Source
from conformance.report.diff import Diff, diff, render_diff_text
from conformance.report.errors import ReportError
from conformance.report.hostsdir import is_run_id, merge_hosts_dir
from conformance.report.html import write_html
from conformance.report.junit import write_junit
from conformance.report.markdown import write_summary
from conformance.report.merge import merge
from conformance.report.model import (
    ClauseRecord,
    ColumnKey,
    HostRecord,
    Result,
    Results,
    Run,
    Summary,
    dump,
    load,
    summarize,
)
from conformance.report.recap import attach_provisioning, load_recap, parse_recap
from conformance.report.writer import new_run_dir, point_latest, write_all

__all__ = [
    "ClauseRecord",
    "ColumnKey",
    "Diff",
    "HostRecord",
    "ReportError",
    "Result",
    "Results",
    "Run",
    "Source",
    "Summary",
    "attach_provisioning",
    "diff",
    "dump",
    "is_run_id",
    "load",
    "load_recap",
    "merge",
    "merge_hosts_dir",
    "new_run_dir",
    "parse_recap",
    "point_latest",
    "render_diff_text",
    "summarize",
    "write_all",
    "write_html",
    "write_junit",
    "write_summary",
]
