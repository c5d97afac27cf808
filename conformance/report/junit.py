"""junit.xml for CI dashboards: one testsuite per area, one testcase per result, in the xunit2 shape.

CI systems (GitLab, Jenkins, GitHub test reporters) only know pass/fail/error/skip, so the richer
verdicts are mapped onto those and the real verdict travels in each testcase's properties:
warn passes with a note in system-out, xfail is a skip of type "xfail", timeout and unreachable are
errors. Testcase properties are outside the strict xunit2 XSD but every mainstream consumer reads
them; they are what lets a dashboard filter by host or implementation.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from conformance.report._io import atomic_write_text
from conformance.report.model import Result, Results, format_time
from conformance.verdicts import Verdict

#: The suite that holds one "[<host>] reachability" testcase per host that could not be reached (or whose
#: run failed, in a merged fan-out), and "[<host>] run" for a host whose run ended badly.
REACHABILITY_SUITE = "conformance.reachability"

#: Characters XML 1.0 cannot carry even escaped (NUL, most C0 controls, lone surrogates); kernel and
#: terminal output in messages can hold them, and one would make the whole file unparseable.
_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_ERRORS = {Verdict.ERROR, Verdict.TIMEOUT, Verdict.UNREACHABLE}
_SKIPS = {Verdict.SKIP, Verdict.XFAIL}


@dataclass(slots=True)
class _Suite:
    """Counts for one testsuite element, kept beside it while testcases are added."""

    element: ET.Element
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    time: float = 0.0
    names: set[str] = field(default_factory=set)

    def count(self, verdict: Verdict, duration: float) -> None:
        self.tests += 1
        self.time += duration
        if verdict is Verdict.FAIL:
            self.failures += 1
        elif verdict in _ERRORS:
            self.errors += 1
        elif verdict in _SKIPS:
            self.skipped += 1

    def unique(self, name: str, test: str) -> str:
        """Testcase names must be unique for CI to track them across runs; disambiguate by test id."""
        candidate, n = name, 1
        if candidate in self.names:
            candidate = f"{name} ({test})"
        while candidate in self.names:
            n += 1
            candidate = f"{name} ({test}) #{n}"
        self.names.add(candidate)
        return candidate


def build_junit(results: Results) -> ET.Element:
    """The ``<testsuites>`` tree for ``results``."""
    root = ET.Element("testsuites", name=f"conformance {results.run.id}")
    suites: dict[str, _Suite] = {}
    timestamp = format_time(results.run.started)
    # The hosts the run checked, not the machine that renders the report (it may be regenerated later).
    hostnames = _x(",".join(h.name for h in results.hosts))

    def suite(name: str) -> _Suite:
        if name not in suites:
            element = ET.SubElement(root, "testsuite", name=name, timestamp=timestamp, hostname=hostnames)
            suites[name] = _Suite(element)
        return suites[name]

    reported: set[tuple[str, str]] = set()
    for result in results.results:
        if result.clause is None:  # a host's own record: one testcase per host and record name
            if (result.host, result.test) not in reported:
                reported.add((result.host, result.test))
                _reachability_case(suite(REACHABILITY_SUITE), result.host, result.message or result.actual or "",
                                   result.verdict, result.test)
            continue
        _result_case(suite(f"conformance.{result.area}"), results, result)
    reported_hosts = {host for host, _ in reported}
    for host in results.hosts:
        if not host.reachable and host.name not in reported_hosts:
            reported_hosts.add(host.name)
            _reachability_case(suite(REACHABILITY_SUITE), host.name, host.reason or "")

    for s in suites.values():
        _set_counts(s.element, s.tests, s.failures, s.errors, s.skipped, s.time)
    totals = list(suites.values())
    _set_counts(root, sum(s.tests for s in totals), sum(s.failures for s in totals),
                sum(s.errors for s in totals), sum(s.skipped for s in totals), sum(s.time for s in totals))
    return root


def write_junit(results: Results, path: Path) -> None:
    """Write junit.xml (UTF-8, with an XML declaration) atomically."""
    root = build_junit(results)
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode", xml_declaration=False)
    atomic_write_text(Path(path), '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n")


def _x(text: str) -> str:
    """Text safe for XML 1.0: characters it cannot carry become U+FFFD."""
    return _NOT_XML.sub("\ufffd", text)


def _set_counts(element: ET.Element, tests: int, failures: int, errors: int, skipped: int, time: float) -> None:
    element.set("tests", str(tests))
    element.set("failures", str(failures))
    element.set("errors", str(errors))
    element.set("skipped", str(skipped))
    element.set("time", f"{time:.3f}")


def _properties(case: ET.Element, pairs: Iterable[tuple[str, str]]) -> None:
    props = ET.SubElement(case, "properties")
    for name, value in pairs:
        ET.SubElement(props, "property", name=name, value=_x(value))


def _expected_actual(result: Result) -> str:
    parts = [result.message]
    if result.expected is not None:
        parts.append(f"expected: {result.expected}")
    if result.actual is not None:
        parts.append(f"actual: {result.actual}")
    parts.append(f"test: {result.test}")
    return _x("\n".join(p for p in parts if p))


def _result_case(suite: _Suite, results: Results, result: Result) -> None:
    clause = results.clauses.get(result.clause) if result.clause is not None else None
    title = clause.title if clause is not None else ""
    name = suite.unique(_x(f"{result.clause} {title} [{result.column.label}]"), _x(result.test))
    case = ET.SubElement(suite.element, "testcase", classname=suite.element.get("name", ""), name=name,
                         time=f"{result.duration:.3f}")
    _properties(case, [
        ("host", result.host),
        ("implementation", result.implementation or ""),
        ("level", str(result.level) if result.level is not None else ""),
        ("clause", result.clause or ""),
        ("source", str(clause.source) if clause is not None else ""),
        ("verdict", str(result.verdict)),
        ("fault", result.fault or ""),
        ("test", result.test),
    ])
    first_line = _x(next((line for line in result.message.splitlines() if line.strip()), str(result.verdict)))
    verdict = result.verdict
    if verdict is Verdict.FAIL:
        ET.SubElement(case, "failure", message=first_line, type="fail").text = _expected_actual(result)
    elif verdict in _ERRORS:
        ET.SubElement(case, "error", message=first_line, type=str(verdict)).text = _expected_actual(result)
    elif verdict is Verdict.SKIP:
        ET.SubElement(case, "skipped", message=_x(result.message))
    elif verdict is Verdict.XFAIL:
        ET.SubElement(case, "skipped", message=_x(result.message), type="xfail")
    elif verdict is Verdict.WARN:
        ET.SubElement(case, "system-out").text = f"WARN: {_expected_actual(result)}"
    suite.count(verdict, result.duration)


def _reachability_case(suite: _Suite, host: str, reason: str, verdict: Verdict = Verdict.UNREACHABLE,
                       test: str | None = None) -> None:
    name = suite.unique(_x(test or f"[{host}] reachability"), _x(host))
    case = ET.SubElement(suite.element, "testcase", classname=REACHABILITY_SUITE, name=name, time="0.000")
    _properties(case, [("host", host), ("verdict", str(verdict))])
    default = "host unreachable" if verdict is Verdict.UNREACHABLE else "the host could not be checked"
    first_line = next((line for line in reason.splitlines() if line.strip()), default)
    ET.SubElement(case, "error", message=_x(first_line), type=str(verdict)).text = _x(reason)
    suite.count(verdict, 0.0)
