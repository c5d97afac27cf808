"""The results of one run as typed, frozen data, and the one canonical file they live in.

results.json is the only thing a run writes that other tools read; junit.xml, report.html and
summary.md are derived from these classes alone, so they can be regenerated (or merged, or diffed)
long after the hosts are gone.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conformance.clauses import Clause
from conformance.report._io import atomic_write_text, read_json
from conformance.report.errors import ReportError
from conformance.report.validate import validate
from conformance.verdicts import Level, Verdict, counts_against

SCHEMA_VERSION = 1


def parse_time(text: str) -> datetime:
    """An RFC 3339 time from results.json as an aware datetime in UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time without an offset: {text!r}")
    return moment.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """The results.json spelling of a time: UTC with a ``Z``, seconds or finer as the value has."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: results.json times must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _free(value: Mapping[str, Any]) -> dict[str, Any]:
    """A deep, plain-dict copy of a free-form object, so no caller shares mutable state with us."""
    return copy.deepcopy(dict(value))


@dataclass(frozen=True, slots=True)
class Run:
    """Who ran what, when: enough to reproduce the run."""

    id: str
    started: datetime
    stopped: datetime
    suite_version: str
    git_sha: str | None
    command: tuple[str, ...]
    level: Level
    options: Mapping[str, Any] = field(default_factory=dict)
    seeds: Mapping[str, Any] = field(default_factory=dict)
    merged_from: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Comparing naive and aware datetimes raises deep inside merge(); refuse them at the door.
        if self.started.tzinfo is None or self.stopped.tzinfo is None:
            raise ValueError(f"run {self.id}: started and stopped must be timezone-aware")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Run:
        """Build from the ``run`` object of results.json."""
        merged = d.get("merged_from")
        return cls(
            id=d["id"], started=parse_time(d["started"]), stopped=parse_time(d["stopped"]),
            suite_version=d["suite_version"], git_sha=d["git_sha"], command=tuple(d["command"]),
            level=Level(d["level"]), options=_free(d["options"]), seeds=_free(d["seeds"]),
            merged_from=tuple(merged) if merged is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``run`` object of results.json."""
        d: dict[str, Any] = {
            "id": self.id, "started": format_time(self.started), "stopped": format_time(self.stopped),
            "suite_version": self.suite_version, "git_sha": self.git_sha, "command": list(self.command),
            "level": str(self.level), "options": _free(self.options), "seeds": _free(self.seeds),
        }
        if self.merged_from is not None:
            d["merged_from"] = list(self.merged_from)
        return d


# A clause as the run saw it is the catalogue's Clause: one data type, read from results.json by
# Clause.from_dict, so reports carry the text and never need the catalogue files.
ClauseRecord = Clause


@dataclass(frozen=True, slots=True)
class HostRecord:
    """A host the run targeted, with the capabilities probed once on it (or why it was unreachable).

    ``selection`` is what the host was asked to check when that differs per host (an inventory's
    conformance_areas / conformance_impls / conformance_level, or the per-host run a fan-out merged):
    ``{"areas": [...] | None, "impls": [...] | None, "level": "MUST", "source": "inventory" | "run"}``.
    ``provisioning`` is what the provisioning recap says of the host: ``{"idempotent": bool | None,
    "changed_first": n, "changed_second": n | None, "changed_tasks": [{"task", "diff"}]}``. Both are
    optional (older results.json files have neither) and never change a verdict.
    """

    name: str
    spec: str
    reachable: bool
    reason: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)
    selection: Mapping[str, Any] | None = None
    provisioning: Mapping[str, Any] | None = None

    @property
    def level(self) -> Level | None:
        """The level this host was judged at, when its selection says (else the run's applies)."""
        return Level(self.selection["level"]) if self.selection and self.selection.get("level") else None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HostRecord:
        """Build from one item of the ``hosts`` array."""
        selection, provisioning = d.get("selection"), d.get("provisioning")
        return cls(name=d["name"], spec=d["spec"], reachable=d["reachable"], reason=d["reason"],
                   facts=_free(d["facts"]), selection=_free(selection) if selection is not None else None,
                   provisioning=_free(provisioning) if provisioning is not None else None)

    def to_dict(self) -> dict[str, Any]:
        """One item of the ``hosts`` array (selection and provisioning only when known)."""
        d: dict[str, Any] = {"name": self.name, "spec": self.spec, "reachable": self.reachable, "reason": self.reason,
                             "facts": _free(self.facts)}
        if self.selection is not None:
            d["selection"] = _free(self.selection)
        if self.provisioning is not None:
            d["provisioning"] = _free(self.provisioning)
        return d


#: The fault of the matrix column that gathers every clause's faulty variant of an implementation.
ANY_FAULT = "*"


@dataclass(frozen=True, slots=True)
class ColumnKey:
    """One column of the matrix: a host, an implementation on it, and the fault injected (if any).

    ``implementation`` is None only for the placeholder column of a host that could not be reached.
    """

    host: str
    implementation: str | None
    fault: str | None = None

    @property
    def label(self) -> str:
        """``local-kernel``, ``local-kernel+fault:HOST-OVERLAY-001``, or just ``local`` (unreachable)."""
        if self.implementation is None:
            return self.host
        label = f"{self.host}-{self.implementation}"
        if self.fault == ANY_FAULT:
            return f"{label}+fault"
        return f"{label}+fault:{self.fault}" if self.fault else label


@dataclass(frozen=True, slots=True)
class Result:
    """One check of one clause on one (host, implementation, fault), or a host's unreachable record."""

    clause: str | None
    test: str
    host: str
    implementation: str | None
    fault: str | None
    level: Level | None
    area: str | None
    verdict: Verdict
    duration: float = 0.0
    message: str = ""
    expected: str | None = None
    actual: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def column(self) -> ColumnKey:
        """The (host, implementation, fault) this result belongs to."""
        return ColumnKey(self.host, self.implementation, self.fault)

    @property
    def matrix_column(self) -> ColumnKey:
        """The matrix column: each clause has its own faulty variant, so they share one column."""
        return ColumnKey(self.host, self.implementation, ANY_FAULT) if self.fault else self.column

    @property
    def key(self) -> tuple[str | None, str, str, str | None, str | None]:
        """What makes a result unique within a run: (clause, test, host, implementation, fault)."""
        return (self.clause, self.test, self.host, self.implementation, self.fault)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Result:
        """Build from one item of the ``results`` array."""
        return cls(
            clause=d["clause"], test=d["test"], host=d["host"], implementation=d["implementation"],
            fault=d["fault"], level=Level(d["level"]) if d["level"] is not None else None, area=d["area"],
            verdict=Verdict(d["verdict"]), duration=float(d["duration"]), message=d["message"],
            expected=d["expected"], actual=d["actual"], context=_free(d["context"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """One item of the ``results`` array."""
        return {
            "clause": self.clause, "test": self.test, "host": self.host, "implementation": self.implementation,
            "fault": self.fault, "level": str(self.level) if self.level is not None else None,
            "area": self.area, "verdict": str(self.verdict), "duration": self.duration,
            "message": self.message, "expected": self.expected, "actual": self.actual,
            "context": _free(self.context),
        }


def _zero() -> dict[Verdict, int]:
    return dict.fromkeys(Verdict, 0)


@dataclass(frozen=True, slots=True)
class Summary:
    """The counts at the end of results.json; always recomputed, never trusted from a file."""

    total: int
    by_verdict: Mapping[Verdict, int]
    by_level: Mapping[Level, Mapping[Verdict, int]]
    conformant: bool

    def to_dict(self) -> dict[str, Any]:
        """The ``summary`` object of results.json."""
        return {
            "total": self.total,
            "by_verdict": {str(v): self.by_verdict.get(v, 0) for v in Verdict},
            "by_level": {str(lv): {str(v): self.by_level.get(lv, {}).get(v, 0) for v in Verdict} for lv in Level},
            "conformant": self.conformant,
        }


@dataclass(frozen=True, slots=True)
class Results:
    """Everything one run (or a merge of runs) found."""

    run: Run
    clauses: Mapping[str, ClauseRecord]
    hosts: tuple[HostRecord, ...]
    results: tuple[Result, ...]

    def host(self, name: str) -> HostRecord | None:
        """The record of host ``name``, if the run knew it."""
        return next((h for h in self.hosts if h.name == name), None)

    def columns(self) -> list[ColumnKey]:
        """Matrix columns in a stable order: hosts as listed, then implementation, plain before faulty.

        A host that could not be reached, or whose run failed, and has no per-clause results gets one
        placeholder column, so that it shows up in the matrix instead of silently vanishing.
        """
        order = {h.name: i for i, h in enumerate(self.hosts)}
        keys = {r.matrix_column for r in self.results if r.clause is not None}
        hosts_with_columns = {k.host for k in keys}
        host_records = {r.host for r in self.results if r.clause is None}
        keys |= {ColumnKey(h.name, None, None) for h in self.hosts
                 if (not h.reachable or h.name in host_records) and h.name not in hosts_with_columns}
        return sorted(keys, key=lambda k: (order.get(k.host, len(order)), k.host, k.implementation or "",
                                           k.fault is not None, k.fault or ""))

    @property
    def summary(self) -> Summary:
        """The summary at the run's own compliance level."""
        return summarize(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Results:
        """Build from a results.json document.

        This does not validate (``load`` does, and ``dump`` validates what it writes); the ``summary``
        in ``d`` is ignored because it is derived and recomputed on demand.
        """
        return cls(
            run=Run.from_dict(d["run"]),
            clauses={k: ClauseRecord.from_dict(v) for k, v in d["clauses"].items()},
            hosts=tuple(HostRecord.from_dict(h) for h in d["hosts"]),
            results=tuple(Result.from_dict(r) for r in d["results"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """The results.json document, summary included."""
        return {
            "schema_version": SCHEMA_VERSION,
            "run": self.run.to_dict(),
            "clauses": {k: c.to_dict() for k, c in self.clauses.items()},
            "hosts": [h.to_dict() for h in self.hosts],
            "results": [r.to_dict() for r in self.results],
            "summary": summarize(self).to_dict(),
        }


def summarize(results: Results, level: Level | None = None) -> Summary:
    """Count verdicts overall and per clause level, and decide conformance at ``level``.

    ``level`` defaults to each host's own (its ``selection`` level, e.g. an inventory's
    conformance_level), else the run's. The runner already turns failures below its level into
    ``warn``, so for one run this is "no bad verdict at all"; the parameter matters for merged runs
    and for asking "would this run conform at MUST?" of a run made at MAY. Results without a level
    (a host's unreachable or failed-run record) and hosts marked unreachable always count against
    conformance: a host that was not checked cannot be called conformant.
    """
    host_levels = {h.name: h.level for h in results.hosts if h.level is not None} if level is None else {}
    default = level if level is not None else results.run.level
    by_verdict = _zero()
    by_level = {lv: _zero() for lv in Level}
    conformant = all(h.reachable for h in results.hosts)
    for r in results.results:
        by_verdict[r.verdict] += 1
        if r.level is not None:
            by_level[r.level][r.verdict] += 1
        threshold = host_levels.get(r.host, default)
        if counts_against(r.verdict, r.fault is not None) and (r.level is None or r.level.within(threshold)):
            conformant = False
    return Summary(total=len(results.results), by_verdict=by_verdict, by_level=by_level, conformant=conformant)


def load(path: Path) -> Results:
    """Read and validate a results.json; a malformed file raises ReportError naming file and JSON path."""
    data = read_json(path)
    validate(data, str(path))
    try:
        return Results.from_dict(data)
    except ValueError as exc:  # e.g. a time the pattern let through but the calendar does not have
        raise ReportError(f"{path}: {exc}") from exc


def to_json(results: Results, origin: str = "results") -> str:
    """The validated results.json text (strict JSON: NaN or infinity in facts is an error)."""
    data = results.to_dict()
    validate(data, origin)
    try:
        return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ReportError(f"{origin}: cannot be written as JSON: {exc}") from exc


def dump(results: Results, path: Path) -> None:
    """Validate, then write results.json atomically; nothing is written if validation fails."""
    atomic_write_text(Path(path), to_json(results, str(path)))


#: How serious a verdict is, for picking the one a matrix cell or a diff key shows when several tests
#: share it. A definite fail outranks "could not decide" (error, timeout): it is the stronger finding.
SEVERITY: Mapping[Verdict, int] = {
    Verdict.PASS: 0, Verdict.SKIP: 1, Verdict.XFAIL: 2, Verdict.WARN: 3,
    Verdict.TIMEOUT: 4, Verdict.ERROR: 5, Verdict.FAIL: 6, Verdict.UNREACHABLE: 7,
}


def clause_order(results: Results) -> list[ClauseRecord]:
    """Clauses grouped by area (areas in first-seen order), IDs sorted within an area."""
    areas: dict[str, list[ClauseRecord]] = {}
    for clause in results.clauses.values():
        areas.setdefault(clause.area, []).append(clause)
    return [c for group in areas.values() for c in sorted(group, key=lambda c: c.id)]


def worst(verdicts: Iterable[Verdict]) -> Verdict | None:
    """The most serious of several verdicts (for a cell that several tests share), None for none."""
    return max(verdicts, key=SEVERITY.__getitem__, default=None)

