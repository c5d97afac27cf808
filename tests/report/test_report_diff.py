"""diff: regressions, fixes, new failures and changed facts between two runs."""

from __future__ import annotations

from dataclasses import replace

from conformance.report.diff import ABSENT, Change, classify, diff, render_diff_text
from conformance.report.model import HostRecord, Result, Results
from conformance.verdicts import Verdict


def with_results(base: Results, results: list[Result], run_id: str = "20261129T033000Z_ef56ab") -> Results:
    return replace(base, run=replace(base.run, id=run_id), results=tuple(results))


def test_identical_runs_have_no_regressions(sample: Results) -> None:
    d = diff(sample, sample)
    assert not d.has_regressions
    assert d.transitions == () and d.facts == ()
    assert "regressions: no" in render_diff_text(d)


def test_pass_to_fail_is_a_regression_and_fail_to_pass_is_fixed(sample: Results) -> None:
    results = list(sample.results)
    i_pass = next(i for i, r in enumerate(results) if r.verdict is Verdict.PASS)
    i_fail = next(i for i, r in enumerate(results) if r.verdict is Verdict.FAIL)
    results[i_pass] = replace(results[i_pass], verdict=Verdict.FAIL, message="now broken")
    results[i_fail] = replace(results[i_fail], verdict=Verdict.PASS, message="")
    d = diff(sample, with_results(sample, results))
    assert d.has_regressions
    kinds = {t.change: t for t in d.transitions}
    assert set(kinds) == {Change.REGRESSION, Change.FIXED}
    assert (kinds[Change.REGRESSION].old, kinds[Change.REGRESSION].new) == (Verdict.PASS, Verdict.FAIL)
    text = render_diff_text(d)
    assert text.index("REGRESSION:") < text.index("FIXED:") < text.index("counts:")
    assert "now broken" in text


def test_absent_to_fail_is_a_new_failure_that_counts_as_regression(sample: Results) -> None:
    new_result = replace(sample.results[0], host="remote", implementation="crun", verdict=Verdict.FAIL)
    d = diff(sample, with_results(sample, [*sample.results, new_result]))
    assert [t.change for t in d.transitions] == [Change.NEW_FAILURE]
    assert d.transitions[0].old is ABSENT
    assert d.has_regressions
    assert "NEW FAILURE:" in render_diff_text(d)


def test_other_changes_added_and_removed(sample: Results) -> None:
    results = list(sample.results)
    i_fail = next(i for i, r in enumerate(results) if r.verdict is Verdict.FAIL)
    results[i_fail] = replace(results[i_fail], verdict=Verdict.ERROR)  # bad -> bad: changed
    removed = results.pop(0)
    added = replace(removed, implementation="youki", verdict=Verdict.PASS)
    d = diff(sample, with_results(sample, [*results, added]))
    changes = sorted(t.change for t in d.transitions)
    assert changes == sorted([Change.CHANGED, Change.REMOVED, Change.ADDED])
    assert not d.has_regressions
    assert classify(ABSENT, Verdict.SKIP) is Change.ADDED
    assert classify(Verdict.WARN, Verdict.TIMEOUT) is Change.REGRESSION
    assert classify(Verdict.PASS, Verdict.PASS) is None


def test_changed_facts_are_listed(sample: Results) -> None:
    local = sample.hosts[0]
    facts = {**local.facts, "kernel": {"release": "6.8.0", "config": {"OVERLAY_FS": "y"}}, "new_fact": 1}
    hosts = (HostRecord(local.name, local.spec, True, None, facts), *sample.hosts[1:])
    d = diff(sample, replace(sample, hosts=hosts))
    assert [(f.host, f.key, f.old, f.new) for f in d.facts] == [
        ("local", "kernel.release", "6.6.0", "6.8.0"), ("local", "new_fact", ABSENT, 1)]
    assert not d.has_regressions
    text = render_diff_text(d)
    assert "local: kernel.release: 6.6.0 -> 6.8.0" in text
    assert "local: new_fact: absent -> 1" in text
