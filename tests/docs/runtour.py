"""Run docs/tour.md as a reader would, and say where it stops being true.

    python -m tests.docs.runtour                 # run it; exit 1 and show the first difference
    python -m tests.docs.runtour --update        # write what the commands print back into the tour
    python -m tests.docs.runtour --write-index   # conformance/tour_index.json from the tour's steps

The commands run in order in one shell (tests/docs/shell.py) started in the repository root, as root,
like a reader who has run the README's main command. Each must exit 0 (a command that shows a failure
says so itself, `...; echo "exit status $?"`), and print what the tour shows, compared under the rules
of tests/docs/normalise.py. The run stops at the first command that does not: the later ones build on
it. The cleanup block runs however the run ended, and then the runner removes what the tour may still
have left: the `conformance-tour-*` directories it made on /dev/shm, with any mount under them first.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.docs.normalise import Matcher
from tests.docs.shell import Session, ShellError
from tests.docs.tourdoc import Command, TourDoc, TourFile, index_of, parse_tour

ROOT = Path(__file__).resolve().parents[2]
TOUR = ROOT / "docs" / "tour.md"
INDEX = ROOT / "conformance" / "tour_index.json"
SCRATCH_PARENT = Path("/dev/shm")
SCRATCH_PREFIX = "conformance-tour-"
COMMAND_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class Ran:
    """One command (or committed file) of the tour as it ran: its output and what was wrong, if anything."""

    item: Command | TourFile
    output: str
    seconds: float
    problem: str | None = None
    #: The command failed or hung (not only printed something else): what follows cannot run on it.
    fatal: bool = False


@dataclass(slots=True)
class TourRun:
    """Everything that ran, in order; the run is good when nothing has a problem and nothing was left out."""

    doc: TourDoc
    ran: list[Ran] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[Ran]:
        """What ran with a problem (cleanup commands after a failure are not counted)."""
        return [r for r in self.ran if r.problem is not None]

    @property
    def ok(self) -> bool:
        """Every command of the tour ran, with the output it shows."""
        done = {id(r.item) for r in self.ran if r.problem is None}
        return not self.failures and all(id(item) in done for item in self.doc.items)

    def report(self) -> str:
        """The first failure in full, where it is in the tour, and how far the run got."""
        lines = [f"{self.doc.path}: {len(self.ran)} of {len(self.doc.items)} commands ran in {self.seconds:.1f} s"]
        for failed in self.failures[:1]:
            item = failed.item
            what = item.text if isinstance(item, Command) else f"the file {item.name} (committed as {item.committed})"
            lines += [f"{self.doc.path}:{item.line} (step {item.step}): {what}", f"  {failed.problem}"]
            if failed.output:
                lines += ["  the run printed:", *(f"    {line}" for line in failed.output.rstrip().split("\n"))]
        return "\n".join(lines)


def _scratch_dirs(parent: Path) -> set[Path]:
    return set(parent.glob(f"{SCRATCH_PREFIX}*")) if parent.is_dir() else set()


def _mounts_under(paths: set[Path]) -> list[str]:
    """Mount points under any of `paths`, deepest first (mountinfo field 5)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        targets = [line.split(" ")[4] for line in info]
    return sorted((t for t in targets if any(t == str(p) or t.startswith(f"{p}/") for p in paths)),
                  key=len, reverse=True)


def remove_scratch(paths: set[Path]) -> None:
    """Unmount what is mounted under the tour's directories, then remove them."""
    for target in _mounts_under(paths):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True, timeout=30)
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def scratch_guard(parent: Path = SCRATCH_PARENT) -> Iterator[None]:
    """Whatever happens inside, the `conformance-tour-*` directories made meanwhile are gone afterwards.

    The runner cannot ask a shell that failed where it was, so it compares before with after; two tours
    running at once on one host would see each other's directories (the project's tests run one).
    """
    before = _scratch_dirs(parent)
    try:
        yield
    finally:
        remove_scratch(_scratch_dirs(parent) - before)


def _check_file(session: Session, item: TourFile, matcher: Matcher, docs: Path) -> Ran:
    """A committed file (beside the tour, in `docs`) compared with the one the tour just wrote, as output is."""
    committed = docs / item.committed
    outcome = session.run(f"cat -- {shlex.quote(item.name)}", timeout=30)
    if outcome.status != 0:
        return Ran(item, outcome.output, outcome.seconds, f"the tour did not write {item.name}", fatal=True)
    if not committed.is_file():
        return Ran(item, outcome.output, outcome.seconds, f"{item.committed} is missing (run with --update)")
    problem = matcher.compare(committed.read_text(encoding="utf-8"), outcome.output)
    return Ran(item, outcome.output, outcome.seconds, problem and f"{item.committed}: {problem}")


def _run_one(session: Session, item: Command | TourFile, matcher: Matcher, timeout: float, docs: Path) -> Ran:
    try:
        if isinstance(item, TourFile):
            return _check_file(session, item, matcher, docs)
        outcome = session.run(item.text, timeout)
    except ShellError as err:
        return Ran(item, err.output, timeout, str(err), fatal=True)
    if outcome.status != 0:
        return Ran(item, outcome.output, outcome.seconds, f"exit status {outcome.status} (the tour's commands exit 0)",
                   fatal=True)
    return Ran(item, outcome.output, outcome.seconds, matcher.compare(item.expected, outcome.output))


def run_tour(doc: TourDoc, *, cwd: Path = ROOT, timeout: float = COMMAND_TIMEOUT, keep_going: bool = False,
             scratch_parent: Path = SCRATCH_PARENT, env: Mapping[str, str] | None = None) -> TourRun:
    """Run the tour's commands in order, then its cleanup block, and leave nothing behind.

    keep_going: go on after a command whose output differs (for --update); one that fails still stops it.
    scratch_parent: where the tour makes its `conformance-tour-*` directory (the runner removes new ones).
    """
    run = TourRun(doc)
    started = time.monotonic()
    matcher = Matcher()
    with scratch_guard(scratch_parent):
        session = Session(cwd, env)
        try:
            stopped = False
            for item in doc.items:
                if isinstance(item, Command) and item.cleanup:
                    continue
                ran = _run_one(session, item, matcher, timeout, doc.path.parent)
                run.ran.append(ran)
                if ran.problem is not None and (ran.fatal or not keep_going):
                    stopped = True
                    break
            for command in (c for c in doc.commands if c.cleanup):
                ran = _run_one(session, command, matcher, timeout, doc.path.parent)
                if not stopped:  # after a failure the cleanup only has to run, whatever it prints
                    run.ran.append(ran)
        finally:
            session.close()
    run.seconds = time.monotonic() - started
    return run


def update_tour(doc: TourDoc, run: TourRun) -> int:
    """Write the output of each command that differs back into the tour (and the files it commits); how many."""
    lines = list(doc.lines)
    changed = 0
    for ran in sorted(run.failures, key=lambda r: -r.item.line):
        item = ran.item
        if ran.fatal:
            continue
        if isinstance(item, TourFile):
            (doc.path.parent / item.committed).write_text(ran.output, encoding="utf-8")
        else:
            start, end = item.output_lines
            lines[start:end] = ran.output.rstrip("\n").split("\n") if ran.output.strip() else []
        changed += 1
    doc.path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return changed


def write_index(doc: TourDoc, path: Path = INDEX) -> None:
    """conformance/tour_index.json, as tests/docs/test_tour_doc.py expects it."""
    path.write_text(json.dumps(index_of(doc), indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Command line: run, --update or --write-index."""
    parser = argparse.ArgumentParser(prog="python -m tests.docs.runtour", description=__doc__.split("\n")[0])
    parser.add_argument("tour", nargs="?", type=Path, default=TOUR)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--update", action="store_true", help="write the commands' output back into the tour")
    what.add_argument("--write-index", action="store_true", help="write conformance/tour_index.json and stop")
    args = parser.parse_args(argv)
    doc = parse_tour(args.tour)
    if args.write_index:
        write_index(doc)
        print(f"wrote {INDEX.relative_to(ROOT)}: {len(doc.steps)} steps")
        return 0
    if os.geteuid() != 0:
        print("the tour mounts, unshares and writes cgroups: run it as root", file=sys.stderr)
        return 2
    run = run_tour(doc, keep_going=args.update)
    if args.update:
        changed = update_tour(doc, run)
        print(f"updated {changed} outputs in {args.tour}; run again to check")
        return 0
    print(run.report())
    return 0 if run.ok else 1


if __name__ == "__main__":
    sys.exit(main())
