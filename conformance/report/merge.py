"""Merging runs: one report for several partial runs (per host, per area, or a rerun of failures).

Later inputs win: a rerun is passed after the run it repeats, so its verdicts replace the old ones
key by key while everything it did not rerun is kept. What was replaced is recorded in the merged
run's options, so the merged report never hides that two sources disagreed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conformance import __version__
from conformance.report.errors import ReportError
from conformance.report.model import ClauseRecord, HostRecord, Result, Results, Run
from conformance.verdicts import Level, Verdict


def merge(inputs: Sequence[Results], run_id: str, command: Sequence[str] = ()) -> Results:
    """Merge ``inputs`` (oldest first) into one Results with id ``run_id`` (e.g. ``<UTC>_merged``).

    Hosts and clauses are unions by name/id and results are concatenated; on a clash the later input
    wins: a host record, a clause text, or a result with the same (clause, test, host, implementation,
    fault). Every host named by two inputs, and every clause whose text differs, is listed in
    ``run.options["merge_conflicts"]`` as ``{"kind", "name", "kept", "dropped", ...}`` with run ids. The merged run
    spans min(started) to max(stopped), its level is the most inclusive of the inputs' (so that no
    input's results fall below it), and ``run.merged_from`` lists the inputs' run ids in order.
    suite_version and git_sha are the inputs' when they agree; otherwise this package's version and
    None, since no single commit produced the merged results.
    """
    if not inputs:
        raise ReportError("merge: no results to merge")
    hosts: dict[str, tuple[HostRecord, str]] = {}
    clauses: dict[str, tuple[ClauseRecord, str]] = {}
    results: dict[tuple[str | None, str, str, str | None, str | None], Result] = {}
    conflicts: list[dict[str, Any]] = []
    replaced = 0
    for source in inputs:
        rid = source.run.id
        for host in source.hosts:
            if host.name in hosts:
                conflicts.append({"kind": "host", "name": host.name, "kept": rid, "dropped": hosts[host.name][1],
                                  "identical": hosts[host.name][0] == host})
            hosts[host.name] = (host, rid)
        for cid, clause in source.clauses.items():
            if cid in clauses and clauses[cid][0] != clause:
                conflicts.append({"kind": "clause", "name": cid, "kept": rid, "dropped": clauses[cid][1]})
            clauses[cid] = (clause, rid)
        for result in source.results:
            if results.pop(result.key, None) is not None:
                replaced += 1
            results[result.key] = result  # re-inserted last: the merged order follows the winning input

    # A host that a later input reached is no longer unreachable: drop the older "[host] reachability"
    # records, or the merged run would stay non-conformant for a problem the rerun showed is gone.
    for key, result in list(results.items()):
        winner = hosts.get(result.host)
        if result.clause is None and result.verdict is Verdict.UNREACHABLE and winner and winner[0].reachable:
            del results[key]

    runs = [source.run for source in inputs]
    seeds: dict[str, Any] = {}
    for run in runs:
        seeds.update(run.seeds)
    level = max((run.level for run in runs), key=lambda lv: lv.rank, default=Level.MUST)
    merged = Run(
        id=run_id,
        started=min(run.started for run in runs),
        stopped=max(run.stopped for run in runs),
        suite_version=runs[-1].suite_version if len({r.suite_version for r in runs}) == 1 else __version__,
        git_sha=runs[-1].git_sha if len({r.git_sha for r in runs}) == 1 else None,
        command=tuple(command) or ("conformance", "merge", *(run.id for run in runs)),
        level=level,
        options={
            "merge_conflicts": conflicts,
            "merge_replaced_results": replaced,
            "merged_options": {run.id: dict(run.options) for run in runs},
        },
        seeds=seeds,
        merged_from=tuple(run.id for run in runs),
    )
    return Results(
        run=merged,
        clauses={cid: clause for cid, (clause, _) in clauses.items()},
        hosts=tuple(host for host, _ in hosts.values()),
        results=tuple(results.values()),
    )
