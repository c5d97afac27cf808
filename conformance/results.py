"""Collecting verdicts during a run and turning them into the canonical results.json document."""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance import __version__
from conformance.clauses import Catalogue
from conformance.verdicts import Level, Verdict

JsonDict = dict[str, Any]


def utc_stamp(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with a Z, as results.json writes times."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_sha(directory: Path) -> str | None:
    """The commit the suite runs from, when it runs from a git checkout."""
    try:
        done = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


@dataclass(slots=True)
class Collector:
    """Results by test node id: a later phase may turn a pass into an error (a teardown failure)."""

    results: dict[str, JsonDict] = field(default_factory=dict)

    def add(self, entry: JsonDict) -> None:
        """Record one phase's verdict for a test."""
        previous = self.results.get(entry["test"])
        if previous is None or previous["verdict"] == Verdict.PASS:
            if previous is not None:
                entry["duration"] = previous["duration"] + entry["duration"]
            self.results[entry["test"]] = entry

    def unreachable(self, host: str, reason: str) -> None:
        """One result for a host that could not be reached, instead of one traceback per test."""
        self.results[f"[{host}] reachability"] = {
            "clause": None, "test": f"[{host}] reachability", "host": host, "implementation": None,
            "fault": None, "level": None, "area": None, "verdict": str(Verdict.UNREACHABLE), "duration": 0.0,
            "message": reason, "expected": "the host answers the probe", "actual": reason, "context": {},
        }


def document(
    *,
    run_id: str,
    started: dt.datetime,
    stopped: dt.datetime,
    command: list[str],
    level: Level,
    options: JsonDict,
    seeds: JsonDict,
    catalogue: Catalogue,
    hosts: list[JsonDict],
    collector: Collector,
) -> JsonDict:
    """The results.json document (schema_version 1) for one run, without its summary.

    The summary is derived data: conformance.report.model.summarize computes it when the document is
    written, so its rules (levels, faulty variants) live in one place.
    """
    results = sorted(collector.results.values(), key=lambda r: (r["host"], r["clause"] or "", r["test"]))
    used = {r["clause"] for r in results if r["clause"]}
    clauses = {c.id: c.to_dict() for c in catalogue if c.id in used}
    return {
        "schema_version": 1,
        "run": {
            "id": run_id, "started": utc_stamp(started), "stopped": utc_stamp(stopped),
            "suite_version": __version__, "git_sha": git_sha(Path(__file__).resolve().parent),
            "command": command, "level": str(level), "options": options, "seeds": seeds,
        },
        "clauses": clauses,
        "hosts": hosts,
        "results": results,
    }
