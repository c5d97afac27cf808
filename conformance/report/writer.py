"""Writing a run's reports into its own directory and pointing ``reports/latest`` at it.

One directory per run (``reports/<UTC stamp>_<short id>/``) keeps old runs for diffing; the
``latest`` symlink gives scripts and people one stable path. The link is relative, so the reports
tree can be moved or copied as a CI artifact and still work.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

from conformance.report._io import atomic_write_text
from conformance.report.errors import ReportError
from conformance.report.html import write_html
from conformance.report.junit import write_junit
from conformance.report.markdown import write_summary
from conformance.report.model import Results, to_json

LATEST = "latest"
_SHORT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")

#: File names inside a run directory; CI configuration refers to these.
RESULTS_JSON = "results.json"
JUNIT_XML = "junit.xml"
REPORT_HTML = "report.html"
SUMMARY_MD = "summary.md"


def write_all(results: Results, run_dir: Path) -> dict[str, Path]:
    """Write results.json, junit.xml, report.html and summary.md into ``run_dir`` (created if needed).

    The results are validated before any file is written, so an invalid Results leaves no partial
    report behind; each file is written atomically. Returns the paths by file name.
    """
    run_dir = Path(run_dir)
    paths = {name: run_dir / name for name in (RESULTS_JSON, JUNIT_XML, REPORT_HTML, SUMMARY_MD)}
    # Validate first (once: it is the slow part, about 0.2 ms per result): ReportError, nothing written.
    text = to_json(results, str(paths[RESULTS_JSON]))
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths[RESULTS_JSON], text)
    write_junit(results, paths[JUNIT_XML])
    write_html(results, paths[REPORT_HTML])
    write_summary(results, paths[SUMMARY_MD])
    return paths


def run_dir_name(started: datetime, short_id: str) -> str:
    """``20261128T033000Z_ab12cd``: sorts by time, and says which run it is."""
    if started.tzinfo is None:
        raise ValueError(f"naive datetime {started!r}: the run directory name is in UTC")
    if not _SHORT_ID.match(short_id):
        raise ValueError(f"short id {short_id!r}: letters, digits and '-' only (it becomes a directory name)")
    return f"{started.astimezone(UTC):%Y%m%dT%H%M%SZ}_{short_id}"


def new_run_dir(reports_root: Path, started: datetime, short_id: str) -> Path:
    """Create ``reports_root/<YYYYmmddTHHMMSSZ>_<short_id>/`` and repoint ``reports_root/latest`` to it.

    Raises FileExistsError if that directory exists: two runs must not write into one directory.
    The symlink is replaced atomically (a new link renamed over the old one), so a reader never finds
    ``latest`` missing; if ``latest`` is a real file or directory it is left alone and ReportError says so.
    """
    reports_root = Path(reports_root)
    run_dir = reports_root / run_dir_name(started, short_id)
    reports_root.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir()
    point_latest(reports_root, run_dir)
    return run_dir


def point_latest(reports_root: Path, run_dir: Path) -> None:
    """Atomically make ``reports_root/latest`` a relative symlink to ``run_dir``."""
    latest = Path(reports_root) / LATEST
    if latest.exists() and not latest.is_symlink():
        raise ReportError(f"{latest}: exists and is not a symlink; not replacing it")
    target = os.path.relpath(Path(run_dir), Path(reports_root))
    tmp = latest.with_name(f".{LATEST}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp, target_is_directory=True)
    try:
        os.replace(tmp, latest)  # rename(2) over an existing symlink is atomic
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
