"""Cgroups: the flake rate of the timing clauses, and what a limited container costs per runtime.

1. Flake rate. The clauses tagged `timing` in conformance/clauses/cgroups.yaml (CPU quota, throttling and
   usage over a window, memory.high throttling, the OOM kill, pause and resume) are run --runs times
   against each implementation through `conformance run`, exactly as a user runs them. A verdict other
   than pass (or a skip the host cannot help, like memory.high off cgroup v2) counts as a flake. The
   project's bar is 0: the script exits 1 when any clause flaked.
2. Cost. The same runs time one container with memory and pids limits whose cgroup is read at a
   checkpoint (CG-LIFE-001's test): the median per implementation and its ratio to runc, the reference
   peer, on the same work in the same run.
3. Teeth (--faults). Each timing clause's faulty reference variant must be caught on every run, or the
   project's own test of its teeth flakes: the runs add `--faults --level MAY`, and a faulty variant
   whose verdict is not fail (where its sound run is not a skip) counts as a missed fault.

Run as root on a prepared host (bin/bootstrap); every run writes under a conformance-bench-* dir on
/dev/shm, removed after. For another host, pass --hosts and --ssh-config as to `conformance run`.
Usage: python bench/cgroups.py [--runs 20] [--impl ref --impl runc ...] [--clause CG-MEM-008 ...]
       [--faults] [--hosts ssh://guest --ssh-config F]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))

from conformance.clauses import load_catalogue  # noqa: E402
from conformance.probe.cg_faults import CG_FAULTS  # noqa: E402
from conformance.suite_index import tests_by_clause  # noqa: E402

_COST_CLAUSE = "CG-LIFE-001"


def timing_clauses() -> list[str]:
    """The cgroups clauses whose checks depend on time: tagged `timing` in the catalogue."""
    return sorted(c.id for c in load_catalogue().select(("cgroups",)) if "timing" in c.tags)


def selection(clauses: list[str]) -> str:
    """A pytest -k expression for the tests of these clauses."""
    index = tests_by_clause()
    names = sorted({test.split("::")[1] for cid in clauses for test in index.get(cid, [])})
    return " or ".join(names)


def one_run(workdir: Path, impls: list[str], extra: list[str], keyword: str) -> list[dict[str, object]]:
    """One `conformance run` of the selected tests; its results."""
    reports = workdir / "reports"
    argv = [sys.executable, "-m", "conformance", "run", "--area", "cgroups", "--report-dir", str(reports),
            *[f"--impl={impl}" for impl in impls], *extra, "--", "-k", keyword, "-q"]
    done = subprocess.run(argv, cwd=_ROOT, capture_output=True, text=True, timeout=1800, check=False)
    try:
        results = json.loads((reports / "latest" / "results.json").read_text(encoding="utf-8"))["results"]
    except (OSError, ValueError, KeyError) as err:
        raise RunFailed(f"`conformance run` exited {done.returncode} without results ({err}):\n"
                        f"{(done.stdout + done.stderr)[-1500:]}") from None
    finally:
        shutil.rmtree(reports, ignore_errors=True)
    return list(results)


def faulty_outcomes(results: list[dict[str, object]], clauses: list[str]) -> dict[str, str]:
    """Each clause's faulty reference variant in one run: caught (fail), n/a (it and the sound run both
    skip, or both could not decide: a host too busy), or what it got instead (pass, an error or skip the
    sound run did not have, no result)."""
    outcomes = {}
    for clause in clauses:
        for host in sorted({str(r["host"]) for r in results if r["clause"] == clause}) or ["-"]:
            sound = next((r["verdict"] for r in results if r["clause"] == clause and r["host"] == host
                          and r["implementation"] == "ref" and not r["fault"]), None)
            got = next((r["verdict"] for r in results if r["clause"] == clause and r["host"] == host
                        and r["fault"]), None)
            outcome = ("caught" if got == "fail" else "n/a" if got == sound and got in ("skip", "error")
                       else str(got or "no result"))
            # one outcome per clause and run: the worst of the hosts' (n/a, then caught, then anything else)
            rank = {"n/a": 0, "caught": 1}
            if clause not in outcomes or rank.get(outcome, 2) > rank.get(outcomes[clause], 2):
                outcomes[clause] = outcome
    return outcomes


class RunFailed(Exception):
    """A run that wrote no results: a harness problem, counted apart from the clauses' verdicts."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--impl", action="append", default=None, help="default: ref, runc, podman, docker")
    parser.add_argument("--hosts", default=None)
    parser.add_argument("--ssh-config", default=None)
    parser.add_argument("--clause", action="append", default=None,
                        help="only these timing clauses (repeatable; default: every clause tagged timing)")
    parser.add_argument("--faults", action="store_true",
                        help="also run the reference's faulty variants; each must be caught on every run")
    args = parser.parse_args()
    impls = args.impl or ["ref", "runc", "podman", "docker"]
    if args.faults and "ref" not in impls:
        parser.error("--faults runs the reference's faulty variants: add --impl ref")
    extra = [*(["--hosts", args.hosts] if args.hosts else []), *(["--ssh-config", args.ssh_config]
                                                                  if args.ssh_config else []),
             *(["--faults", "--level", "MAY"] if args.faults else [])]
    clauses = [c for c in timing_clauses() if not args.clause or c in args.clause]
    keyword = selection([*clauses, _COST_CLAUSE])
    harness_errors = 0
    verdicts: dict[tuple[str, str], list[str]] = defaultdict(list)
    faulty: dict[str, list[str]] = defaultdict(list)  # clause -> per run: caught, n/a or what it got
    costs: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="conformance-bench-", dir="/dev/shm") as scratch:
        for index in range(args.runs):
            try:
                results = one_run(Path(scratch), impls, extra, keyword)
            except RunFailed as err:
                harness_errors += 1
                print(f"run {index + 1}/{args.runs}: {err}", file=sys.stderr)
                continue
            for result in results:
                if result["fault"]:
                    continue
                key = (str(result["clause"]), str(result["implementation"]))
                verdicts[key].append(str(result["verdict"]))
                if result["clause"] == _COST_CLAUSE and result["verdict"] == "pass":
                    costs[str(result["implementation"])].append(float(str(result["duration"])))
            # Said as they happen, so that a long run (the TCG guest) that dies late still told its flakes.
            bad = [f"{r['clause']}/{r['implementation']}: {r['verdict']}" for r in results
                   if r["clause"] in clauses and not r["fault"] and r["verdict"] not in ("pass", "skip")]
            if args.faults:
                for clause, outcome in faulty_outcomes(results, clauses).items():
                    faulty[clause].append(outcome)
                    if outcome not in ("caught", "n/a"):
                        bad.append(f"{clause}/ref faulty: {outcome}")
            print(f"run {index + 1}/{args.runs} done" + (f"; not passing: {', '.join(bad)}" if bad else ""),
                  file=sys.stderr)
    flaky = 0
    print(f"## Flake rate of the timing clauses over {args.runs} runs\n")
    print("| clause | " + " | ".join(impls) + " |")
    print("|---|" + "---|" * len(impls))
    for clause in clauses:
        cells = []
        for impl in impls:
            seen = verdicts.get((clause, impl), [])
            bad = [v for v in seen if v not in ("pass", "skip")]
            skips = seen.count("skip")
            flaky += len(bad)
            cells.append("n/a (skip)" if seen and skips == len(seen) else f"{len(bad)}/{len(seen)}"
                         + (f" ({', '.join(sorted(set(bad)))})" if bad else ""))
        print(f"| {clause} | " + " | ".join(cells) + " |")
    missed = 0
    if args.faults:
        print(f"\n## Faulty reference variants caught, over {args.runs} runs\n")
        print("| clause | fault | caught |")
        print("|---|---|---|")
        for clause in clauses:
            seen = [outcome for outcome in faulty.get(clause, []) if outcome != "n/a"]
            caught = seen.count("caught")
            missed += len(seen) - caught
            others = sorted({outcome for outcome in seen if outcome != "caught"})
            print(f"| {clause} | {CG_FAULTS.get(clause, ('-',))[0]} | "
                  + (f"{caught}/{len(seen)}" + (f" ({', '.join(others)})" if others else "") if seen
                     else "n/a (skip)") + " |")
    print(f"\n## One limited container, read at a checkpoint ({_COST_CLAUSE}'s test), median of {args.runs}\n")
    base = statistics.median(costs["runc"]) if costs.get("runc") else None
    print("| implementation | median s | ratio to runc |")
    print("|---|---|---|")
    for impl in impls:
        if not costs.get(impl):
            print(f"| {impl} | - | - |")
            continue
        median = statistics.median(costs[impl])
        ratio = f"{median / base:.2f}x" if base else "-"
        print(f"| {impl} | {median:.2f} | {ratio} |")
    print(f"\nflaky verdicts: {flaky}; runs without results (harness errors): {harness_errors}"
          + (f"; faulty variants missed: {missed}" if args.faults else ""))
    return 1 if flaky or harness_errors or missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
