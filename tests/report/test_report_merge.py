"""merge: unions, later input wins, conflicts recorded."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from conformance.report.merge import merge
from conformance.report.model import HostRecord, Results
from conformance.report.validate import validate
from conformance.verdicts import Level, Verdict


def split(sample: Results) -> tuple[Results, Results]:
    """The sample as two runs: local+ghost, then remote (later), like two CI jobs."""
    a = replace(sample, hosts=tuple(h for h in sample.hosts if h.name != "remote"),
                results=tuple(r for r in sample.results if r.host != "remote"))
    b_run = replace(sample.run, id="20261128T040000Z_cd34ef", started=sample.run.started + timedelta(hours=1),
                    stopped=sample.run.stopped + timedelta(hours=1), level=Level.SHOULD, seeds={"hypothesis": 7})
    b = replace(sample, run=b_run, hosts=tuple(h for h in sample.hosts if h.name == "remote"),
                results=tuple(r for r in sample.results if r.host == "remote"))
    return a, b


def test_union_of_disjoint_runs(sample: Results) -> None:
    a, b = split(sample)
    m = merge([a, b], "20261128T050000Z_merged")
    validate(m.to_dict(), "merged")
    assert m.run.id == "20261128T050000Z_merged"
    assert m.run.merged_from == (a.run.id, b.run.id)
    assert m.run.started == a.run.started and m.run.stopped == b.run.stopped
    assert m.run.level is Level.SHOULD  # the most inclusive input level
    assert {h.name for h in m.hosts} == {"local", "remote", "ghost"}
    assert len(m.results) == len(sample.results)
    assert {r.key for r in m.results} == {r.key for r in sample.results}
    assert m.run.options["merge_conflicts"] == []
    assert m.run.seeds == {"hypothesis": 7}


def test_later_input_wins_and_conflicts_are_recorded(sample: Results) -> None:
    rerun_results = tuple(replace(r, verdict=Verdict.PASS, message="") for r in sample.results
                          if r.clause == "OVL-WHITEOUT-001" and r.host == "remote")
    new_remote = HostRecord("remote", "ssh://remote", True, None, {"kernel": {"release": "6.8.0"}})
    rerun = Results(replace(sample.run, id="20261128T040000Z_rerun1"), {}, (new_remote,), rerun_results)
    m = merge([sample, rerun], "20261128T050000Z_merged")
    validate(m.to_dict(), "merged")
    assert len(m.results) == len(sample.results)  # replaced, not duplicated
    replaced = [r for r in m.results if r.clause == "OVL-WHITEOUT-001" and r.host == "remote"]
    assert {r.verdict for r in replaced} == {Verdict.PASS}
    host = m.host("remote")
    assert host is not None and host.facts == {"kernel": {"release": "6.8.0"}}
    conflicts = m.run.options["merge_conflicts"]
    assert conflicts == [{"kind": "host", "name": "remote", "kept": "20261128T040000Z_rerun1",
                          "dropped": sample.run.id, "identical": False}]
    assert m.run.options["merge_replaced_results"] == len(rerun_results)
    assert set(m.clauses) == set(sample.clauses)


def test_a_host_reached_later_is_no_longer_unreachable(sample: Results) -> None:
    ghost = HostRecord("ghost", "ssh://ghost", True, None, {"kernel": {"release": "6.1.0"}})
    late = Results(replace(sample.run, id="20261128T040000Z_ghost1"), {}, (ghost,), ())
    m = merge([sample, late], "20261128T050000Z_merged")
    assert not any(r.verdict is Verdict.UNREACHABLE for r in m.results)
    assert all(h.reachable for h in m.hosts)
