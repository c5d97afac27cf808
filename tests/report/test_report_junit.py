"""junit.xml: parseable, unique names, counts that match the testcases."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from conformance.report.junit import write_junit
from conformance.report.model import Results


def parse(tmp_path: Path, results: Results) -> ET.Element:
    path = tmp_path / "junit.xml"
    write_junit(results, path)
    return ET.parse(path).getroot()


def test_one_suite_per_area_and_names_unique(tmp_path: Path, sample: Results) -> None:
    root = parse(tmp_path, sample)
    assert root.tag == "testsuites"
    suites = {s.get("name") for s in root.iter("testsuite")}
    assert suites == {"conformance.host", "conformance.overlay", "conformance.namespaces", "conformance.cgroups",
                      "conformance.reachability"}
    names = [(c.get("classname"), c.get("name")) for c in root.iter("testcase")]
    assert len(names) == len(set(names)) == 31
    assert ("conformance.host",
            "HOST-OVERLAY-001 overlay filesystem type is available [local-kernel+fault:HOST-OVERLAY-001]") in names


def test_counts_match_testcases(tmp_path: Path, sample: Results) -> None:
    root = parse(tmp_path, sample)
    for suite in root.iter("testsuite"):
        cases = suite.findall("testcase")
        assert int(suite.get("tests", "-1")) == len(cases)
        assert int(suite.get("failures", "-1")) == sum(1 for c in cases if c.find("failure") is not None)
        assert int(suite.get("errors", "-1")) == sum(1 for c in cases if c.find("error") is not None)
        assert int(suite.get("skipped", "-1")) == sum(1 for c in cases if c.find("skipped") is not None)
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("31", "2", "3", "4")
    assert float(root.get("time", "0")) > 0


def test_verdict_mapping(tmp_path: Path, sample: Results) -> None:
    root = parse(tmp_path, sample)
    by_verdict: dict[str, ET.Element] = {}
    for case in root.iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        by_verdict.setdefault(props["verdict"] or "", case)
        if props["verdict"] != "unreachable":
            assert set(props) >= {"host", "implementation", "level", "clause", "source", "verdict", "fault"}
    failure = by_verdict["fail"].find("failure")
    assert failure is not None and "expected: ENOENT" in (failure.text or "")
    assert "actual: regular file" in (failure.text or "")
    assert by_verdict["timeout"].find("error") is not None
    assert by_verdict["error"].find("error") is not None
    skipped = by_verdict["skip"].find("skipped")
    assert skipped is not None and "CAP_SYS_ADMIN" in skipped.get("message", "")
    xfail = by_verdict["xfail"].find("skipped")
    assert xfail is not None and xfail.get("type") == "xfail"
    warn = by_verdict["warn"]
    assert warn.find("failure") is None and warn.find("error") is None
    assert (warn.findtext("system-out") or "").startswith("WARN: ")
    assert by_verdict["pass"].find("properties") is not None
    assert len(list(by_verdict["pass"])) == 1  # properties only


def test_unreachable_host_testcase(tmp_path: Path, sample: Results) -> None:
    root = parse(tmp_path, sample)
    cases = [c for c in root.iter("testcase") if c.get("name") == "[ghost] reachability"]
    assert len(cases) == 1
    error = cases[0].find("error")
    assert error is not None and "Connection refused" in error.get("message", "")


def test_unreachable_host_without_a_record_still_gets_a_testcase(tmp_path: Path, sample: Results) -> None:
    no_record = Results(sample.run, sample.clauses, sample.hosts,
                        tuple(r for r in sample.results if r.clause is not None))
    root = parse(tmp_path, no_record)
    assert [c.get("name") for c in root.iter("testcase") if "reachability" in (c.get("name") or "")] == [
        "[ghost] reachability"]


def test_control_characters_do_not_break_the_xml(tmp_path: Path, sample: Results) -> None:
    from dataclasses import replace

    bad = replace(sample.results[0], verdict=sample.results[0].verdict.FAIL, message="oops \x00\x1b[31m red")
    root = parse(tmp_path, replace(sample, results=(bad, *sample.results[1:])))
    assert root.get("failures") == "3"


def test_duplicate_names_are_disambiguated(tmp_path: Path, sample: Results) -> None:
    from dataclasses import replace

    first = sample.results[0]
    twin = replace(first, test=first.test + "-again")
    root = parse(tmp_path, replace(sample, results=(*sample.results, twin)))
    names = [(c.get("classname"), c.get("name")) for c in root.iter("testcase")]
    assert len(names) == len(set(names)) == 32
