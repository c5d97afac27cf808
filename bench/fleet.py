"""Fleet: wall time of one conformance run over 1, 2, 4 and 8 hosts of the test bed (tools/bed.py), as
ratios to the same run over one host. The target: 8 hosts take less than 2x one host.

Modes, each run from the bed's controller namespace:
- controller: `conformance run --hosts ssh://bed-1,...,ssh://bed-N --ssh-config <bed> -n N` (no -n for one host);
- serial:     the same without -n: one pytest process for every host (no xdist worker start-up and collection);
- inventory:  `conformance run --inventory <bed inventory> --limit bed-1,...` (one xdist worker per host),
  when the CLI has --inventory;
- fan-out:    `ansible-playbook playbooks/run.yml -i <bed inventory> --limit bed-1,...`: every host runs the
  suite itself and the controller fetches and merges the reports, when playbooks/run.yml exists. The bed
  hosts share this machine's file system, so they run the checkout's .venv (conformance_suite_venv)
  rather than a copy installed by provisioning, and the role polls its async run every second
  (--fanout-poll-s) instead of every 15 s, which would otherwise be most of what is measured.

The workload is small and fixed (--area host and two probe-light tests, --select) so that what grows with the
host count is the fleet's overhead, not the work: on a 2-core machine more work per host makes any mode CPU
bound. Each point is one run after one untimed warm-up per mode (--repeat N: the median of N), with the CPU
time of the controller side and the share of the machine's CPU time that was busy (/proc/stat, every
process) beside it; at 90% busy or more a point is CPU bound, which the target excludes. The bed's hosts
share this machine's CPUs, so on a small machine the fan-out's wall time also grows with the hosts' own
work, which a real fleet runs on CPUs of its own. Run as root;
the bed is brought up once with the most hosts asked for and taken down at the end, also on Ctrl-C.
Usage: python bench/fleet.py [--hosts 1,2,4,8] [--modes controller,serial,inventory,fanout] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))
from tools import bed as bed_tool  # noqa: E402

DEFAULT_SELECT = "overlay_is_listed or uts_namespace_keeps"
VENV_BIN = _ROOT / ".venv" / "bin"
RUN_TIMEOUT_S = 1800
CPU_BOUND_BUSY = 0.9


class Skip(Exception):
    """A mode this checkout cannot run yet; the message says why."""


@dataclass(frozen=True, slots=True)
class Point:
    """One fleet run: its wall time and the CPU time of the controller side (the command and its children:
    pytest and its workers, ansible-playbook and its forks, the ssh clients). The hosts' own processes are
    sshd's children, not counted: on the bed they share this machine's CPUs, on a real fleet they would not.
    """

    wall: float
    cpu: float
    busy: float  # the share of the machine's CPU time that was busy during the run (0..1), all processes

    @property
    def cpu_bound(self) -> bool:
        """Nine tenths of every CPU busy: the run waited for CPUs, the case the speed target excludes."""
        return self.busy >= CPU_BOUND_BUSY


def _conformance() -> str:
    script = Path(sys.executable).with_name("conformance")
    return str(script if script.exists() else VENV_BIN / "conformance")


def _has_inventory_mode() -> bool:
    done = subprocess.run([_conformance(), "run", "--help"], capture_output=True, text=True, timeout=60, check=False)
    return "--inventory" in done.stdout


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat's first line.

    The hosts' processes, the controller's, and anyone else's: whether the run had CPUs to spare is a
    property of the machine, not of the controller's process tree.
    """
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(f) for f in stat.readline().split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest time is in user)
    return total - fields[3] - fields[4], total


def _in_bed(bed: bed_tool.Bed, argv: list[str]) -> tuple[Point, subprocess.CompletedProcess[str]]:
    cpu, ticks, started = _cpu(), _machine_ticks(), time.perf_counter()
    done = subprocess.run(bed.exec_argv(*argv), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=_ROOT,
                          check=False, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    wall, (busy, total) = time.perf_counter() - started, _machine_ticks()
    return Point(wall, _cpu() - cpu, (busy - ticks[0]) / max(1, total - ticks[1])), done


def _check_report(run_dir: Path, names: list[str], done: subprocess.CompletedProcess[str]) -> None:
    """The run happened on every host: results.json names them all, reachable."""
    try:
        results = json.loads((run_dir / "latest" / "results.json").read_text())
    except (OSError, ValueError):
        raise RuntimeError(f"no results.json (exit {done.returncode}): {(done.stdout + done.stderr)[-1500:]}") from None
    hosts = sorted(h["name"] for h in results["hosts"] if h["reachable"])
    if hosts != sorted(names):
        raise RuntimeError(f"results.json has reachable hosts {hosts}, expected {sorted(names)} "
                           f"(exit {done.returncode}): {(done.stdout + done.stderr)[-1500:]}")


def controller(bed: bed_tool.Bed, names: list[str], reports: Path, select: str, xdist: bool = True) -> Point:
    workers = ["-n", str(len(names))] if xdist and len(names) > 1 else []
    point, done = _in_bed(bed, [_conformance(), "run", "--hosts", ",".join(f"ssh://{n}" for n in names),
                                  "--ssh-config", str(bed.ssh_config), "--area", "host", "--report-dir", str(reports),
                                  *workers, "--", "-k", select])
    _check_report(reports, names, done)
    return point


def inventory(bed: bed_tool.Bed, names: list[str], reports: Path, select: str) -> Point:
    if not _has_inventory_mode():
        raise Skip("`conformance run` has no --inventory yet")
    point, done = _in_bed(bed, [_conformance(), "run", "--inventory", str(bed.inventory), "--limit", ",".join(names),
                                  "--area", "host", "--report-dir", str(reports), "--", "-k", select])
    _check_report(reports, names, done)
    return point


def fanout(bed: bed_tool.Bed, names: list[str], reports: Path, select: str, poll_s: int) -> Point:
    playbook = _ROOT / "playbooks" / "run.yml"
    if not playbook.exists():
        raise Skip("playbooks/run.yml does not exist yet")
    extra = {"conformance_suite_venv": str(_ROOT / ".venv"), "conformance_suite_poll_s": poll_s,
             "conformance_areas": ["host"], "conformance_run_args": ["--", "-k", select],
             "conformance_reports_dir": str(reports)}
    point, done = _in_bed(bed, [str(VENV_BIN / "ansible-playbook"), str(playbook), "-i", str(bed.inventory),
                                  "--limit", ",".join(names), "-e", json.dumps(extra)])
    _check_report(reports, names, done)
    return point


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default="1,2,4,8", help="host counts, comma separated (default 1,2,4,8)")
    parser.add_argument("--modes", default="controller,serial,inventory,fanout")
    parser.add_argument("--repeat", type=int, default=1, help="runs per point; the median is shown")
    parser.add_argument("--select", default=DEFAULT_SELECT, help="the workload's pytest -k")
    parser.add_argument("--fanout-poll-s", type=int, default=1, help="the role's async poll interval (default 1)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: the bed makes network namespaces, mounts and sshds")
    counts = sorted({int(n) for n in args.hosts.split(",")})
    runners: dict[str, Callable[[bed_tool.Bed, list[str], Path, str], Point]] = {
        "controller": controller, "serial": lambda b, n, r, s: controller(b, n, r, s, xdist=False),
        "inventory": inventory,
        "fanout": lambda b, n, r, s: fanout(b, n, r, s, args.fanout_poll_s)}
    modes = [m for m in args.modes.split(",") if m]
    if unknown := [m for m in modes if m not in runners]:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(runners)}")
    signal.signal(signal.SIGTERM, _stop)
    try:
        bed = bed_tool.up(max(counts))  # removes what it made if it fails
    except bed_tool.SetupError as err:  # a bed that is up already is someone's: leave it alone
        print(f"fleet: {err}", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="conformance-bench-fleet-"))
    times: dict[str, dict[int, Point]] = {m: {} for m in modes}
    notes: dict[str, str] = {}
    try:
        print(f"bed: {max(counts)} hosts up in {bed.up_s:.2f} s; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
              flush=True)
        for mode in modes:
            try:
                runners[mode](bed, ["bed-1"], scratch / f"{mode}-warmup", args.select)  # caches, bytecode, probe
                for count in counts:
                    names = [f"bed-{i}" for i in range(1, count + 1)]
                    runs = [runners[mode](bed, names, scratch / f"{mode}-{count}-{r}", args.select)
                            for r in range(args.repeat)]
                    times[mode][count] = point = sorted(runs, key=lambda p: p.wall)[len(runs) // 2]
                    print(f"  {mode:<10} {count} hosts: {point.wall:6.1f} s, controller CPU {point.cpu:5.1f} s, "
                          f"machine {point.busy:4.0%} busy", flush=True)
            except Skip as why:
                notes[mode] = f"skipped: {why}"
            except RuntimeError as err:
                notes[mode] = f"failed: {err}"
    finally:
        bed_tool.down()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nfleet run, --area host -k {args.select!r}, median of {args.repeat}: wall time, its ratio to one host, "
          f"(the controller side's CPU time, the share of the machine's {os.cpu_count()} CPUs busy)")
    print("hosts " + "".join(f"{m:>32}" for m in modes))
    for count in counts:
        cells = []
        for mode in modes:
            value, one = times[mode].get(count), times[mode].get(counts[0])
            cells.append(f"{value.wall:7.1f} s {value.wall / one.wall:5.2f}x ({value.cpu:5.1f} s, {value.busy:4.0%})"
                         if value is not None and one else f"{'-':>32}")
        print(f"{count:>5} " + "".join(cells))
    most = counts[-1]
    for mode in modes:
        if mode in notes:
            print(f"{mode}: {notes[mode]}")
        elif most in times[mode] and counts[0] in times[mode]:
            point = times[mode][most]
            ratio = point.wall / times[mode][counts[0]].wall
            verdict = "met" if ratio < 2 else "NOT met"
            if ratio >= 2 and point.cpu_bound:  # the target is for CPUs to spare: say that these had none
                verdict += (f", but the machine was CPU bound ({point.busy:.0%} of its {os.cpu_count()} CPUs "
                            "busy), the case the target excludes")
            print(f"{mode}: {most} hosts take {ratio:.2f}x {counts[0]} host(s); target < 2x one host: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
