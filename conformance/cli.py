"""`conformance ...`: run the suite, read the catalogue, gather facts, work with reports, clean hosts.

argparse (standard library) rather than click: the tool has a handful of subcommands and no need for
click's plugins, and every dependency we add is one more thing on every controller.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import re
import secrets
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conformance import __version__, overlay_cli
from conformance.clauses import AREAS, CatalogueError, load_catalogue
from conformance.explore import commands as ref_commands
from conformance.interrupts import sigterm_as_ctrl_c
from conformance.verdicts import (
    EXIT_CONFORMANT,
    EXIT_NOT_CONFORMANT,
    EXIT_UNREACHABLE,
    EXIT_USAGE_OR_HARNESS,
    Level,
    Verdict,
    counts_against,
)


def _host_options(parser: argparse.ArgumentParser, default_hosts: str | None = "local://") -> None:
    parser.add_argument("--hosts", default=default_hosts,
                        help="comma-separated testinfra host specs (local://, ssh://user@node, ansible://group); "
                             "default local://")
    parser.add_argument("--ansible-inventory", help="inventory for ansible:// host specs")
    parser.add_argument("--ssh-config", help="ssh config file for ssh:// hosts")
    parser.add_argument("--ssh-identity-file", help="ssh key for ssh:// hosts")


def build_parser() -> argparse.ArgumentParser:
    """The command line, documented in README.md."""
    parser = argparse.ArgumentParser(prog="conformance", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"container-conformance {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the suite and write a report",
                         description="Exit codes: 0 conformant, 1 not conformant, 2 usage or harness "
                                     "error, 3 a host unreachable.")
    _host_options(run, default_hosts=None)
    run.add_argument("--inventory", metavar="FILE",
                     help="controller mode: check every host of this Ansible inventory, one xdist worker per host; "
                          "host vars conformance_areas, conformance_impls, conformance_level select per host")
    run.add_argument("--limit", metavar="PATTERN", help="with --inventory: only hosts matching this Ansible pattern")
    run.add_argument("--as-host", metavar="NAME",
                     help="name the host NAME in the report instead of 'local' (only with one local:// host)")
    run.add_argument("--run-id", metavar="ID",
                     help="run id and folder name under --report-dir (letters, digits, '._-'; default: "
                          "<UTC time>_<6 hex>); the folder must not exist or be empty")
    run.add_argument("--impl", action="append", default=[], help="implementation (repeatable; default all)")
    run.add_argument("--area", action="append", default=[], choices=AREAS, help="area (repeatable; default all)")
    run.add_argument("--level", default="MUST", type=str.upper, choices=[str(v) for v in Level],
                     help="compliance level: failures below it are warnings (default MUST; with --inventory, "
                          "a host's conformance_level wins)")
    run.add_argument("--report-dir", default="reports", help="where run folders go (default reports/)")
    run.add_argument("--faults", action="store_true", help="also run the deliberately faulty variants")
    run.add_argument("--probe-timeout", type=float, default=120.0, help="seconds per probe call")
    run.add_argument("-n", "--workers",
                     help="pytest-xdist workers (e.g. auto); default: none, or one per host with --inventory")
    run.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")

    clauses = sub.add_parser("clauses", help="list the clause catalogue")
    clauses.add_argument("--area", action="append", default=[], choices=AREAS)
    clauses.add_argument("--level", type=str.upper, choices=[str(v) for v in Level],
                         help="only clauses at this level or stronger")
    clauses.add_argument("--json", action="store_true")

    explain = sub.add_parser("explain", help="print one clause with the tests that check it")
    explain.add_argument("clause_id")
    explain.add_argument("--json", action="store_true")

    facts = sub.add_parser("facts", help="gather and print what hosts offer")
    _host_options(facts)
    facts.add_argument("--json", action="store_true")

    impls = sub.add_parser("impls", help="list the implementation drivers and their areas")
    impls.add_argument("--json", action="store_true")

    clean = sub.add_parser("clean", help="remove what killed runs left on hosts (conformance- prefix)")
    _host_options(clean)
    clean.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    clean.add_argument("--run-id", help="only what this run left: its id, or the short id that ends it")

    report = sub.add_parser("report", help="work with run reports")
    rsub = report.add_subparsers(dest="report_command", required=True)
    merge = rsub.add_parser(
        "merge", help="merge run folders, or a fan-out run's per-host folders, into one report",
        description="With --hosts-dir: exit 0 when the merged run conforms, 1 when not (a host unreachable or "
                    "failed included), 2 on bad input; the output's parent gets a `latest` link.")
    merge.add_argument("dirs", nargs="*", type=Path, help="run folders (or results.json files), oldest first")
    merge.add_argument("--hosts-dir", type=Path, metavar="DIR",
                       help="reports/<run-id>/hosts: one folder per host with results.json and/or status.json")
    merge.add_argument("--expect-host", action="append", default=[], metavar="NAME",
                       help="with --hosts-dir: a host that must have a folder (repeatable); a missing one is "
                            "reported unreachable")
    merge.add_argument("--provision-recap", type=Path, metavar="FILE",
                       help="the conformance_recap callback's JSON: show each host's provisioning and idempotence")
    merge.add_argument("-o", "--output", type=Path, required=True)
    diff = rsub.add_parser("diff", help="transitions between two runs; exit 1 on a regression")
    diff.add_argument("old", type=Path)
    diff.add_argument("new", type=Path)
    diff.add_argument("--json", action="store_true")
    render = rsub.add_parser("render", help="write junit.xml, report.html and summary.md again from results.json")
    render.add_argument("dir", type=Path)
    ref_commands.add_parser(sub)
    overlay_cli.add_parser(sub, _host_options)
    return parser


def _results_file(path: Path) -> Path:
    return path / "results.json" if path.is_dir() else path


def exit_code_for(results: dict[str, Any]) -> int:
    """0 conformant, 1 not conformant, 2 harness error or nothing checked, 3 a host unreachable.

    Worst first: 2, 3, 1. Faulty variants (--faults) count only when one was not caught. A timeout of a
    clause below its host's level (the host's conformance_level, else the run's) does not count.
    """
    default = Level(results["run"]["level"])
    levels = {h["name"]: Level(h["selection"]["level"]) for h in results["hosts"] if h.get("selection")}

    def below(r: dict[str, Any]) -> bool:
        return bool(r["level"]) and not Level(r["level"]).within(levels.get(r["host"], default))

    counted = [r for r in results["results"] if counts_against(Verdict(r["verdict"]), r.get("fault") is not None)
               and not (r["verdict"] == Verdict.TIMEOUT and below(r))]
    verdicts = {r["verdict"] for r in counted}
    checked = [r for r in results["results"] if r["verdict"] != Verdict.SKIP]
    if not checked or Verdict.ERROR in verdicts:
        return EXIT_USAGE_OR_HARNESS
    if Verdict.UNREACHABLE in verdicts:
        return EXIT_UNREACHABLE
    if counted:
        return EXIT_NOT_CONFORMANT
    return EXIT_CONFORMANT


def _check_run_options(args: argparse.Namespace, report_dir: Path) -> None:
    """Usage errors of `run` found before pytest starts, each saying what to do instead (ValueError: exit 2)."""
    from conformance.hosts import check_host_name  # noqa: PLC0415
    from conformance.selection import check_run_id  # noqa: PLC0415

    if args.run_id is not None:
        try:
            check_run_id(args.run_id)
        except ValueError as exc:
            raise ValueError(f"--run-id: {exc}") from None
        folder = report_dir / args.run_id
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ValueError(f"--run-id {args.run_id}: {folder} already exists and is not empty; a run writes into "
                             "a fresh folder: choose another run id or remove that folder")
    if args.limit and not args.inventory:
        raise ValueError("--limit selects hosts of --inventory FILE: give --inventory too")
    if args.inventory:
        clashes = [flag for flag, value in (("--hosts", args.hosts), ("--ansible-inventory", args.ansible_inventory),
                                            ("--as-host", args.as_host)) if value is not None]
        if clashes:
            raise ValueError(f"--inventory takes the hosts and their names from the inventory: leave out "
                             f"{', '.join(clashes)}")
    if args.as_host is not None:
        check_host_name(args.as_host)
        specs = [s.strip() for s in (args.hosts if args.hosts is not None else "local://").split(",") if s.strip()]
        if len(specs) != 1 or not specs[0].startswith("local://"):
            raise ValueError(f"--as-host {args.as_host} renames the one local host of a run: it needs --hosts "
                             f"local:// (or no --hosts), not {args.hosts!r}")


def _inventory_workers(args: argparse.Namespace) -> list[str]:
    """Controller mode's pytest arguments: the inventory, and one xdist worker per host unless -n was given."""
    from conformance.hosts import read_inventory  # noqa: PLC0415

    inventory = read_inventory(args.inventory, args.limit)  # cached: the plugin reads the same one
    argv = ["--conformance-inventory", inventory.path]
    if args.limit:
        argv += ["--conformance-limit", args.limit]
    if args.workers:
        return argv
    if len(inventory.hosts) > 1:
        if importlib.util.find_spec("xdist") is None:
            print(f"conformance: pytest-xdist is not installed: the {len(inventory.hosts)} hosts are checked one "
                  "after the other", file=sys.stderr)
        else:
            argv += ["-n", str(len(inventory.hosts)), "--dist", "loadgroup"]
    return argv


def cmd_run(args: argparse.Namespace) -> int:
    """Run the suite through pytest in this process and turn the results into the exit code."""
    import pytest  # noqa: PLC0415

    now = dt.datetime.now(dt.UTC)
    report_dir = Path(args.report_dir).resolve()
    _check_run_options(args, report_dir)
    run_id = args.run_id or f"{now.strftime('%Y%m%dT%H%M%SZ')}_{secrets.token_hex(3)}"
    argv = ["--pyargs", "conformance.suite", "-p", "no:cacheprovider", "--rootdir",
            str(Path(__file__).resolve().parent.parent), "--level", args.level,
            "--report-dir", str(report_dir), "--run-id", run_id, "--probe-timeout", str(args.probe_timeout),
            "-rfEsxX",
            # The suite needs no conftest.py (its plugin is an entry point), and a certification run must not
            # pick one up from where it is started: pytest loads ./conftest.py and ./test*/conftest.py of the
            # invocation dir, in a checkout the project's own tests/conftest.py.
            "--noconftest"]
    if args.inventory:
        argv += _inventory_workers(args)
    else:
        argv += ["--hosts", args.hosts if args.hosts is not None else "local://"]
    for flag, value in (("--ansible-inventory", args.ansible_inventory), ("--ssh-config", args.ssh_config),
                        ("--ssh-identity-file", args.ssh_identity_file), ("--as-host", args.as_host)):
        if value:
            argv += [flag, value]
    for impl in args.impl:
        argv += ["--impl", impl]
    for area in args.area:
        argv += ["--area", area]
    if args.faults:
        argv.append("--faults")
    if args.workers:
        argv += ["-n", args.workers, "--dist", "loadgroup"]
    argv += args.pytest_args
    with sigterm_as_ctrl_c():
        code = pytest.main(argv)
    results_path = report_dir / run_id / "results.json"
    if code in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.INTERRUPTED) \
            or not results_path.exists():
        print(f"conformance: the run did not complete (pytest exit {int(code)})", file=sys.stderr)
        return EXIT_USAGE_OR_HARNESS
    results = json.loads(results_path.read_text(encoding="utf-8"))
    exit_code = exit_code_for(results)
    explained = any(Verdict(r["verdict"]).is_bad for r in results["results"])  # caught faults fail in pytest too
    if exit_code == EXIT_CONFORMANT and code == pytest.ExitCode.TESTS_FAILED and not explained:
        exit_code = EXIT_USAGE_OR_HARNESS  # pytest saw a failure that no verdict recorded: a harness problem
    words = {EXIT_CONFORMANT: "conformant", EXIT_NOT_CONFORMANT: "NOT conformant",
             EXIT_UNREACHABLE: "incomplete: a host was unreachable",
             EXIT_USAGE_OR_HARNESS: "undecided: harness errors" if any(
                 r["verdict"] == Verdict.ERROR for r in results["results"]) else "undecided: nothing was checked"}
    print(f"conformance: {words[exit_code]} (exit {exit_code}); report: {results_path.parent / 'report.html'}")
    return exit_code


def cmd_clauses(args: argparse.Namespace) -> int:
    """List clauses, as a table or JSON."""
    catalogue = load_catalogue()
    chosen = catalogue.select(tuple(args.area), Level(args.level) if args.level else None)
    if args.json:
        print(json.dumps([c.to_dict() for c in chosen], indent=2))
        return 0
    for c in chosen:
        print(f"{c.id:<22} {c.level!s:<6} {c.title}")
    print(f"{len(chosen)} clauses")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """One clause in full, with its tests and faulty variants."""
    from conformance import drivers  # noqa: PLC0415
    from conformance.suite_index import docstrings, tests_by_clause  # noqa: PLC0415
    from conformance.tour import load_index, resolve  # noqa: PLC0415

    clause = load_catalogue().get(args.clause_id.upper())
    tests = tests_by_clause().get(clause.id, [])
    docs = docstrings()
    faults = {name: d.faults()[clause.id] for name, d in drivers.load_all().items() if clause.id in d.faults()}
    steps = load_index().steps_for(clause.id)
    if args.json:
        print(json.dumps({**clause.to_dict(), "tour_url": resolve(clause.tour), "tour_steps": [s.ref for s in steps],
                          "tests": tests, "faults": faults}, indent=2))
        return 0
    print(f"{clause.id}  [{clause.level}]  {clause.title}\n")
    print(textwrap.fill(clause.statement, 100) + "\n")
    print(f"Source:  {clause.source}")
    if clause.source.url:
        print(f"         {clause.source.url}")
    print(f"Area:    {clause.area}    Tags: {', '.join(clause.tags) or '-'}")
    for step in steps:  # the repository path reads the same on every machine; --json has the link too
        print(f"Shown in the tour: {step.ref}  ({step.title})")
    if clause.tour and not steps:
        print(f"Tour:    {clause.tour}")
    print("\nChecked by:")
    for test in tests:
        print(f"  conformance/suite/{test}\n      {docs.get(test, '')}")
    if not tests:
        print("  (no test yet)")
    for name, what in faults.items():
        print(f"\nFaulty variant ({name}): {what}")
    return 0


def _resolve(args: argparse.Namespace) -> list[Any]:
    from conformance.hosts import resolve  # noqa: PLC0415

    return resolve(args.hosts.split(","), ansible_inventory=args.ansible_inventory, ssh_config=args.ssh_config,
                   ssh_identity_file=args.ssh_identity_file)


def cmd_facts(args: argparse.Namespace) -> int:
    """Gather facts of each host and print them."""
    from conformance import facts  # noqa: PLC0415

    found = facts.gather(_resolve(args), f"facts{secrets.token_hex(2)}", 120.0)
    for client in found.clients.values():
        client.remove_bundle()
    if args.json:
        print(json.dumps({"hosts": found.facts, "unreachable": found.unreachable}, indent=2))
    else:
        for name in found.reachable:
            print(facts.one_line(name, found.facts[name]))
        for name, why in found.unreachable.items():
            print(f"{name}: UNREACHABLE: {why}")
    return EXIT_UNREACHABLE if found.unreachable else 0


def cmd_impls(args: argparse.Namespace) -> int:
    """List drivers."""
    from conformance import drivers  # noqa: PLC0415

    loaded = drivers.load_all()
    rows = [{"name": n, "areas": ",".join(sorted(d.areas)) or "-", "description": d.description,
             "faults": len(d.faults())} for n, d in loaded.items()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['name']:<16} {row['areas']:<28} {row['description']}")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    """Sweep every selected host; also ask each driver to remove what it left."""
    from conformance import drivers  # noqa: PLC0415
    from conformance.hosts import HostError  # noqa: PLC0415
    from conformance.selection import short_id_of  # noqa: PLC0415
    from conformance.transport import ProbeClient  # noqa: PLC0415

    # Host-side names carry the short id: a full run id (or one a run had to digest) is turned into it.
    given = args.run_id
    run_id = short_id_of(given) if given and ("_" in given or not re.fullmatch(r"[a-z0-9-]+", given)) else given
    status = 0
    for host in _resolve(args):
        client = ProbeClient(host, f"clean{secrets.token_hex(2)}")
        try:
            obs = client.sweep(run_id, args.dry_run)
            removed: list[str] = []
            if not args.dry_run:
                for driver in drivers.load_all().values():
                    removed += driver.clean(client)
            client.remove_bundle()
        except HostError as exc:
            print(f"{host.name}: {exc}", file=sys.stderr)
            status = EXIT_UNREACHABLE
            continue
        if not obs.ok:
            print(f"{host.name}: the sweep could not run: {(obs.error or {}).get('error')}", file=sys.stderr)
            status = EXIT_USAGE_OR_HARNESS
            continue
        data = obs.data
        verb = "would remove" if args.dry_run else "removed"
        items = [*data.get("mounts", []), *data.get("cgroups", []), *data.get("paths", []), *data.get("engine", []),
                 *removed]
        print(f"{host.name}: {verb} {len(items)} leftover(s)")
        for item in items:
            print(f"  {item}")
        for problem in data.get("problems", []):
            print(f"  could not remove: {problem}", file=sys.stderr)
            status = EXIT_USAGE_OR_HARNESS
    return status


def _diff_json(result: Any) -> dict[str, Any]:
    return {
        "old_run": result.old_run, "new_run": result.new_run, "has_regressions": result.has_regressions,
        "transitions": [{"clause": t.key[0], "host": t.key[1], "implementation": t.key[2], "fault": t.key[3],
                         "old": str(t.old), "new": str(t.new), "change": str(t.change), "message": t.message}
                        for t in result.transitions],
        "facts": [{"host": f.host, "key": f.key, "old": str(f.old), "new": str(f.new)} for f in result.facts],
        "unchanged": result.unchanged,
    }


def cmd_report(args: argparse.Namespace) -> int:
    """merge, diff and render."""
    from conformance import report  # noqa: PLC0415

    if args.report_command == "merge":
        return _merge(args)
    if args.report_command == "diff":
        result = report.diff(report.load(_results_file(args.old)), report.load(_results_file(args.new)))
        print(json.dumps(_diff_json(result), indent=2) if args.json else report.render_diff_text(result))
        return 1 if result.has_regressions else 0
    report.write_all(report.load(_results_file(args.dir)), args.dir)
    print(f"rendered {args.dir}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    """`report merge`: run folders (exit 0 once written), or a fan-out's hosts dir (exit 0/1 by conformance)."""
    from conformance import report  # noqa: PLC0415

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    command = ["conformance", *sys.argv[1:]]
    if args.hosts_dir is not None:
        if args.dirs:
            raise ValueError("report merge: give run folders or --hosts-dir, not both")
        output = args.output.resolve()
        run_id = output.name if report.is_run_id(output.name) else f"{stamp}_merged"
        merged = report.merge_hosts_dir(args.hosts_dir, run_id, expect=args.expect_host, command=command)
    else:
        if args.expect_host:
            raise ValueError("report merge: --expect-host names hosts of --hosts-dir: give --hosts-dir too")
        if not args.dirs:
            raise ValueError("report merge: give the run folders to merge, or --hosts-dir DIR")
        merged = report.merge([report.load(_results_file(d)) for d in args.dirs], run_id=f"{stamp}_merged",
                              command=command)
    if args.provision_recap is not None:
        merged = report.attach_provisioning(merged, report.load_recap(args.provision_recap))
    report.write_all(merged, args.output)
    if args.hosts_dir is None:
        print(f"merged {len(args.dirs)} runs into {args.output}")
        return 0
    report.point_latest(args.output.resolve().parent, args.output.resolve())
    summary = merged.summary
    hosts = len(merged.hosts)
    print(f"merged {hosts} host{'' if hosts == 1 else 's'} from {args.hosts_dir} into {args.output}: "
          f"{'conformant' if summary.conformant else 'NOT conformant'}")
    for note in merged.run.options.get("merge_notes", []):
        print(f"  note: {note}")
    return EXIT_CONFORMANT if summary.conformant else EXIT_NOT_CONFORMANT


def cmd_overlay(args: argparse.Namespace) -> int:
    """The overlay area's commands (replay)."""
    return overlay_cli.run(args, _resolve)


COMMANDS = {"run": cmd_run, "clauses": cmd_clauses, "explain": cmd_explain, "facts": cmd_facts,
            "impls": cmd_impls, "clean": cmd_clean, "report": cmd_report, "ref": ref_commands.run,
            "overlay": cmd_overlay}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CatalogueError, ValueError, LookupError) as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return EXIT_USAGE_OR_HARNESS
    except KeyboardInterrupt:
        print("conformance: interrupted; run `conformance clean` if a host was left mid-run", file=sys.stderr)
        return EXIT_USAGE_OR_HARNESS


if __name__ == "__main__":
    sys.exit(main())
