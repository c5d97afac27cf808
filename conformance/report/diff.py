"""What changed between two runs: the question a nightly job asks ("did anything regress?").

Results are compared per (clause, host, implementation, fault), the unit a person reasons about; if
several tests share a key, the most serious verdict stands for it. Facts are compared as flat dotted
keys, because a changed kernel version or mount option is often the reason a verdict changed.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass
from typing import Any

from conformance.report.facts import fact_text, flatten_facts
from conformance.report.model import SEVERITY, ColumnKey, Results, worst
from conformance.verdicts import Verdict

DiffKey = tuple[str | None, str, str | None, str | None]  # (clause, host, implementation, fault)


class Absent(enum.Enum):
    """Marks a key or fact that one side does not have (distinct from a None fact value)."""

    ABSENT = "absent"

    def __str__(self) -> str:
        return "absent"


ABSENT = Absent.ABSENT


class Change(enum.StrEnum):
    """How one key's verdict moved; the order is the order of the text report."""

    REGRESSION = "regression"  # not bad -> bad
    NEW_FAILURE = "new failure"  # absent -> bad: a regression too (a new check that fails)
    FIXED = "fixed"  # bad -> not bad
    CHANGED = "changed"  # any other change, e.g. pass -> skip, fail -> error
    ADDED = "added"  # absent -> not bad
    REMOVED = "removed"  # present -> absent

    @property
    def is_regression(self) -> bool:
        """Whether this change should fail a job that gates on regressions."""
        return self in {Change.REGRESSION, Change.NEW_FAILURE}


@dataclass(frozen=True, slots=True)
class Transition:
    """One key whose verdict differs between the runs."""

    key: DiffKey
    old: Verdict | Absent
    new: Verdict | Absent
    change: Change
    message: str  # the new side's message (or the old one's, when removed)

    @property
    def label(self) -> str:
        """``CLAUSE [host-impl+fault:X]``, or ``[host] reachability`` for a host record."""
        clause, host, impl, fault = self.key
        column = ColumnKey(host, impl, fault).label
        return f"{clause} [{column}]" if clause is not None else f"[{host}] reachability"


@dataclass(frozen=True, slots=True)
class FactChange:
    """One fact of one host that differs (or exists on one side only)."""

    host: str
    key: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class Diff:
    """Transitions (most serious first) and fact changes between an old and a new run."""

    old_run: str
    new_run: str
    transitions: tuple[Transition, ...]
    facts: tuple[FactChange, ...]
    unchanged: int

    @property
    def has_regressions(self) -> bool:
        """True when any key went from not bad (or absent) to bad."""
        return any(t.change.is_regression for t in self.transitions)

    def counts(self) -> dict[Change, int]:
        """How many transitions of each kind."""
        counted = Counter(t.change for t in self.transitions)
        return {change: counted.get(change, 0) for change in Change}


def _by_key(results: Results) -> dict[DiffKey, tuple[Verdict, str]]:
    grouped: dict[DiffKey, list[tuple[Verdict, str]]] = {}
    for r in results.results:
        grouped.setdefault((r.clause, r.host, r.implementation, r.fault), []).append((r.verdict, r.message))
    out: dict[DiffKey, tuple[Verdict, str]] = {}
    for key, held in grouped.items():
        verdict = worst(v for v, _ in held)
        assert verdict is not None  # every group holds at least one result
        out[key] = (verdict, next(m for v, m in held if v is verdict))
    return out


def classify(old: Verdict | Absent, new: Verdict | Absent) -> Change | None:
    """The kind of change from ``old`` to ``new``, None when they are the same."""
    if old == new:
        return None
    if isinstance(new, Absent):
        return Change.REMOVED
    if isinstance(old, Absent):
        return Change.NEW_FAILURE if new.is_bad else Change.ADDED
    if new.is_bad and not old.is_bad:
        return Change.REGRESSION
    if old.is_bad and not new.is_bad:
        return Change.FIXED
    return Change.CHANGED


def _sort_key(t: Transition) -> tuple[int, int, str]:
    order = list(Change).index(t.change)
    severity = -SEVERITY[t.new] if isinstance(t.new, Verdict) else 0
    return (order, severity, t.label)


def diff(old: Results, new: Results) -> Diff:
    """Compare two runs: verdict transitions per key and changed facts per host."""
    before, after = _by_key(old), _by_key(new)
    transitions = []
    unchanged = 0
    for key in before.keys() | after.keys():
        old_v, old_msg = before.get(key, (ABSENT, ""))
        new_v, new_msg = after.get(key, (ABSENT, ""))
        change = classify(old_v, new_v)
        if change is None:
            unchanged += 1
            continue
        transitions.append(Transition(key, old_v, new_v, change, new_msg if key in after else old_msg))
    transitions.sort(key=_sort_key)
    return Diff(old.run.id, new.run.id, tuple(transitions), tuple(_fact_changes(old, new)), unchanged)


def _fact_changes(old: Results, new: Results) -> list[FactChange]:
    old_facts = {h.name: flatten_facts(h.facts) for h in old.hosts}
    new_facts = {h.name: flatten_facts(h.facts) for h in new.hosts}
    changes = []
    for host in sorted(old_facts.keys() | new_facts.keys()):
        a, b = old_facts.get(host, {}), new_facts.get(host, {})
        for key in sorted(a.keys() | b.keys()):
            va, vb = a.get(key, ABSENT), b.get(key, ABSENT)
            if va != vb or type(va) is not type(vb):
                changes.append(FactChange(host, key, va, vb))
    return changes


def _value(value: Any) -> str:
    return "absent" if value is ABSENT else fact_text(value)


def render_diff_text(d: Diff) -> str:
    """Plain text for a terminal or a CI log: transitions (regressions first), facts, then counts."""
    lines = [f"diff {d.old_run} -> {d.new_run}"]
    current: Change | None = None
    for t in d.transitions:
        if t.change is not current:
            current = t.change
            lines += ["", f"{t.change.upper()}:"]
        note = f"  ({' '.join(t.message.split())[:200]})" if t.message and t.change is not Change.REMOVED else ""
        lines.append(f"  {t.label}: {t.old} -> {t.new}{note}")
    if d.facts:
        lines += ["", "FACTS CHANGED:"]
        lines += [f"  {f.host}: {f.key}: {_value(f.old)} -> {_value(f.new)}" for f in d.facts]
    counts = d.counts()
    lines += ["", "counts: " + ", ".join(f"{n} {c}" for c, n in counts.items())
              + f", {d.unchanged} unchanged, {len(d.facts)} facts changed",
              "regressions: yes" if d.has_regressions else "regressions: no"]
    return "\n".join(lines) + "\n"
