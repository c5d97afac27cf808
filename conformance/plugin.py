"""pytest glue: options, markers, parametrisation over (host, implementation), verdicts, the report.

Hosts come from testinfra's own options (--hosts, --ansible-inventory, ...), or from an Ansible
inventory (--conformance-inventory, `conformance run --inventory`), whose per-host variables
conformance_areas, conformance_impls and conformance_level narrow what each host checks. Each test
marked with @pytest.mark.clause(ID) and taking the `target` fixture runs once for every reachable host
and every selected implementation that offers the clause's area, plus, with --faults, once for each
deliberately faulty variant of that clause. State lives in config.stash, never in module globals.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conformance import drivers as registry
from conformance import facts as host_facts
from conformance.clauses import AREAS, Catalogue, Clause, load_catalogue
from conformance.deviations import Deviation, find, load
from conformance.hosts import HostSelectionError, Inventory, check_host_name, read_inventory, renamed, resolve
from conformance.interrupts import sigterm_as_ctrl_c, sigterm_held
from conformance.results import Collector, document
from conformance.selection import HostSelection, check_run_id, host_selections, short_id_of
from conformance.target import Target, TargetParam
from conformance.transport import ProbeClient
from conformance.verdict_rules import decide
from conformance.verdicts import Level, Verdict

IMPL_HELP = "implementation to check (repeatable; default: every registered one)"
AREA_HELP = f"area to check (repeatable; one of {', '.join(AREAS)}; default: all)"
LEVEL_HELP = "compliance level: failures of clauses below it are reported as warn (MUST, SHOULD or MAY)"
REPORT_DIR_HELP = "write results.json, junit.xml, report.html and summary.md under DIR/<run-id>/"
FAULTS_HELP = "also run each clause's deliberately faulty implementation variants (the suite's teeth)"
PROBE_TIMEOUT_HELP = "seconds one probe call may take on a host before it is stopped and cleaned up"
DEVIATIONS_HELP = "known deviations file (default: the package's deviations.yaml)"
AS_HOST_HELP = "name the (single, local://) host NAME in the report instead of 'local', e.g. its inventory_hostname"
INVENTORY_HELP = ("Ansible inventory: check every host of it (or of --conformance-limit); each host's vars "
                  "conformance_areas, conformance_impls and conformance_level narrow what it checks")
LIMIT_HELP = "Ansible host pattern limiting --conformance-inventory (as ansible-playbook --limit)"

RESULT_PROPERTY = "conformance"
#: The suite package's folder: one sub-folder per area, named as the area.
_SUITE_DIR = Path(__file__).resolve().parent / "suite"


@dataclass(slots=True)
class RunState:
    """Everything one run knows, kept in config.stash."""

    run_id: str
    short_id: str
    started: dt.datetime
    level: Level
    areas: tuple[str, ...]
    impls: list[str]
    catalogue: Catalogue
    deviations: list[Deviation]
    drivers: dict[str, registry.Driver]
    hosts: host_facts.HostFacts
    with_faults: bool
    report_dir: Path | None
    collector: Collector = field(default_factory=Collector)
    report_path: Path | None = None
    inventory: Inventory | None = None
    selections: dict[str, HostSelection] = field(default_factory=dict)

    def level_of(self, host: str) -> Level:
        """The compliance level a host is judged at: its conformance_level, else the run's --level."""
        selection = self.selections.get(host)
        return selection.level if selection is not None else self.level

    @property
    def run_level(self) -> Level:
        """The results' level: the most inclusive host level, so no host's counted results fall below it."""
        levels = [self.level_of(h) for h in self.hosts.specs] or [self.level]
        return max(levels, key=lambda lv: lv.rank)


STATE = pytest.StashKey[RunState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Options in one group, each paired with an ini key (pytest-timeout's manners)."""
    group = parser.getgroup("conformance", "container-conformance")
    group.addoption("--impl", action="append", dest="conformance_impl", metavar="NAME", help=IMPL_HELP)
    group.addoption("--area", action="append", dest="conformance_area", metavar="AREA", help=AREA_HELP)
    group.addoption("--level", dest="conformance_level", metavar="LEVEL", help=LEVEL_HELP)
    group.addoption("--report-dir", dest="conformance_report_dir", metavar="DIR", help=REPORT_DIR_HELP)
    group.addoption("--faults", action="store_true", default=None, dest="conformance_faults", help=FAULTS_HELP)
    group.addoption("--probe-timeout", type=float, dest="conformance_probe_timeout", metavar="SECONDS",
                    help=PROBE_TIMEOUT_HELP)
    group.addoption("--deviations", dest="conformance_deviations", metavar="FILE", help=DEVIATIONS_HELP)
    group.addoption("--run-id", dest="conformance_run_id", metavar="ID",
                    help="run id (default: <UTC timestamp>_<6 hex>); `conformance run` sets it")
    group.addoption("--as-host", dest="conformance_as_host", metavar="NAME", help=AS_HOST_HELP)
    group.addoption("--conformance-inventory", dest="conformance_inventory", metavar="FILE", help=INVENTORY_HELP)
    group.addoption("--conformance-limit", dest="conformance_limit", metavar="PATTERN", help=LIMIT_HELP)
    parser.addini("conformance_impl", IMPL_HELP, type="args", default=[])
    parser.addini("conformance_area", AREA_HELP, type="args", default=[])
    parser.addini("conformance_level", LEVEL_HELP, default="MUST")
    parser.addini("conformance_report_dir", REPORT_DIR_HELP, default="")
    parser.addini("conformance_faults", FAULTS_HELP, type="bool", default=False)
    parser.addini("conformance_probe_timeout", PROBE_TIMEOUT_HELP, default="120")
    parser.addini("conformance_deviations", DEVIATIONS_HELP, default="")


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(name, default=None)
    return value if value not in (None, []) else config.getini(name)


def _new_run_id(now: dt.datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}_{secrets.token_hex(3)}"


def _suite_selected(config: pytest.Config) -> bool:
    """Only set up hosts when the run collects the conformance suite, not for unrelated pytest runs."""
    args = " ".join(str(a) for a in config.args) + " " + " ".join(config.invocation_params.args)
    return "conformance.suite" in args or "conformance/suite" in args


_SIGTERM = pytest.StashKey[contextlib.ExitStack]()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give SIGTERM back its handler from before the run."""
    held = config.stash.get(_SIGTERM, None)
    if held is not None:
        held.close()


def pytest_configure(config: pytest.Config) -> None:
    """Register markers; when the suite runs, resolve hosts, gather facts and load the catalogue."""
    config.addinivalue_line("markers", "clause(id): the clause (catalogue ID) this test checks")
    config.addinivalue_line("markers", "requires(*names): host capabilities the test needs (skip with reason)")
    config.addinivalue_line("markers", "destructive: the test changes host state in its own sandbox")
    config.addinivalue_line("markers", "conformance_deviation(deviation): a known deviation (deviations.yaml)")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(), "conformance-xdist")
    else:  # the parametrisation always sets it; without xdist it is inert
        config.addinivalue_line("markers", "xdist_group(name): keep tests of one host on one xdist worker")
    if not _suite_selected(config) or config.getoption("help", default=False):
        return
    # plain `pytest` on the suite gets what `conformance run` gets: SIGTERM ends the run as Ctrl-C does
    config.stash[_SIGTERM] = contextlib.ExitStack()
    config.stash[_SIGTERM].enter_context(sigterm_as_ctrl_c())
    try:
        level = Level(str(_option(config, "conformance_level")).upper())
    except ValueError:
        raise pytest.UsageError(
            f"--level must be MUST, SHOULD or MAY, not {_option(config, 'conformance_level')!r}") from None
    areas = tuple(_option(config, "conformance_area") or ())
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        raise pytest.UsageError(f"unknown area(s) {', '.join(unknown)}; known: {', '.join(AREAS)}")
    impls = list(_option(config, "conformance_impl") or [])
    try:
        drivers = registry.load_all(impls or None)
        deviations = load(_option(config, "conformance_deviations") or None)
    except (LookupError, ValueError, OSError) as exc:
        raise pytest.UsageError(str(exc)) from None
    now = dt.datetime.now(dt.UTC)
    workerinput = getattr(config, "workerinput", None)
    run_id = (workerinput or {}).get("conformance_run_id") or config.getoption("conformance_run_id") or _new_run_id(now)
    try:
        check_run_id(run_id)
    except ValueError as exc:
        raise pytest.UsageError(f"--run-id: {exc}") from None
    short_id = short_id_of(run_id)
    shared_inventory = (workerinput or {}).get("conformance_inventory")
    try:
        inventory = Inventory.from_json(shared_inventory) if shared_inventory else _inventory_of(config)
        hosts = _resolve_hosts(config, inventory)
    except HostSelectionError as exc:
        raise pytest.UsageError(str(exc)) from None
    selections = host_selections(inventory, level) if inventory is not None else {}
    timeout = float(_option(config, "conformance_probe_timeout"))
    report_dir = _option(config, "conformance_report_dir")
    shared = (workerinput or {}).get("conformance_hosts")
    if shared:
        gathered = host_facts.from_controller(hosts, json.loads(shared), short_id, timeout)
    else:
        gathered = host_facts.gather(hosts, short_id, timeout)
    if gathered.errors:
        raise pytest.UsageError("; ".join(gathered.errors.values()))
    config.stash[STATE] = RunState(
        run_id=run_id, short_id=short_id, started=now, level=level, areas=areas,
        impls=list(drivers), catalogue=load_catalogue(), deviations=deviations, drivers=drivers,
        hosts=gathered,
        with_faults=bool(_option(config, "conformance_faults")),
        report_dir=Path(report_dir) if report_dir else None,
        inventory=inventory, selections=selections,
    )
    config.pluginmanager.register(ResultSink(config.stash[STATE]), "conformance-results")


def _inventory_of(config: pytest.Config) -> Inventory | None:
    """The inventory of controller mode (read through Ansible once per run), or None."""
    path = config.getoption("conformance_inventory", default=None)
    limit = config.getoption("conformance_limit", default=None)
    if not path:
        if limit:
            raise HostSelectionError("--conformance-limit needs --conformance-inventory")
        return None
    for clash in ("hosts", "ansible_inventory"):
        if config.getoption(clash, default=None):
            raise HostSelectionError(f"--conformance-inventory takes the hosts from the inventory: leave out "
                                     f"--{clash.replace('_', '-')}")
    return read_inventory(path, limit)


def _resolve_hosts(config: pytest.Config, inventory: Inventory | None) -> list[Any]:
    """The hosts of --hosts, or every inventory host as ansible://NAME; --as-host renames local://."""
    as_host = config.getoption("conformance_as_host", default=None)
    common: dict[str, Any] = {
        "connection": config.getoption("connection", default=None),
        "ssh_config": config.getoption("ssh_config", default=None),
        "ssh_identity_file": config.getoption("ssh_identity_file", default=None),
        "sudo": bool(config.getoption("sudo", default=False)),
    }
    if inventory is not None:
        if as_host:
            raise HostSelectionError("--as-host names a single local:// host; with an inventory the hosts are "
                                     "named by it")
        found = resolve([f"ansible://{name}" for name in inventory.hosts], ansible_inventory=inventory.path, **common)
        # testinfra matches ansible://NAME as a glob over group names too: keep the inventory's hosts only.
        return [h for h in found if h.name in inventory.hosts]
    hosts_option = config.getoption("hosts", default=None)
    hosts = resolve(hosts_option.split(",") if hosts_option is not None else None,
                    ansible_inventory=config.getoption("ansible_inventory", default=None), **common)
    if as_host:
        check_host_name(as_host)
        if len(hosts) != 1 or hosts[0].spec != "local://":
            raise HostSelectionError(f"--as-host {as_host} names the one local host of a run (--hosts local://); "
                                     f"this run selects {', '.join(h.spec for h in hosts)}")
        hosts = [renamed(hosts[0], as_host)]
    return hosts


class XdistHooks:
    """xdist's hooks, registered only when xdist is installed (pluggy refuses unknown hooks)."""

    def pytest_configure_node(self, node: Any) -> None:
        """Workers share the controller's run id, so host-side names and cleanup agree."""
        state = node.config.stash.get(STATE, None)
        if state is not None:
            node.workerinput["conformance_run_id"] = state.run_id
            # Facts are gathered once per host per run: workers get the controller's.
            node.workerinput["conformance_hosts"] = json.dumps({
                "facts": state.hosts.facts, "unreachable": state.hosts.unreachable, "specs": state.hosts.specs})
            if state.inventory is not None:  # Ansible is asked once per run, on the controller
                node.workerinput["conformance_inventory"] = state.inventory.to_json()


def _clause_of(node: pytest.Item | pytest.Metafunc, catalogue: Catalogue) -> Clause:
    marks = list(node.definition.iter_markers("clause") if isinstance(node, pytest.Metafunc)
                 else node.iter_markers("clause"))
    if len(marks) != 1 or len(marks[0].args) != 1:
        raise pytest.UsageError(f"{node.function.__qualname__}: a conformance test needs exactly one "  # type: ignore[union-attr]
                                "@pytest.mark.clause('ID')")
    clause_id = marks[0].args[0]
    if clause_id not in catalogue:
        raise pytest.UsageError(f"{node.function.__qualname__} names unknown clause {clause_id!r}")  # type: ignore[union-attr]
    return catalogue.get(clause_id)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per (reachable host, implementation offering the area[, faulty variant])."""
    if "target" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash.get(STATE, None)
    if state is None:
        raise pytest.UsageError("the conformance suite needs the conformance plugin configured: run it "
                                "with `conformance run` or `pytest --pyargs conformance.suite`")
    clause = _clause_of(metafunc, state.catalogue)
    params: list[TargetParam] = []
    for host in state.hosts.reachable:
        for name, driver in state.drivers.items():
            if clause.area not in driver.areas:
                continue
            params.append(TargetParam(host, name))
            if state.with_faults and clause.id in driver.faults():
                params.append(TargetParam(host, name, clause.id))
    if not params:
        # Recorded as skips with the reason, so a run that checked nothing says so instead of passing.
        why = f"no selected implementation ({', '.join(state.drivers)}) offers area {clause.area}"
        placeholders = [TargetParam(host, "none") for host in state.hosts.reachable]
        metafunc.parametrize("target", [pytest.param(p, id=p.id, marks=pytest.mark.skip(reason=why))
                                        for p in placeholders], indirect=True)
        return
    # One xdist group per host: with --dist loadgroup a host's tests stay on one worker, which reuses
    # its ssh connection and never races another worker on the same host.
    metafunc.parametrize("target", [pytest.param(p, id=p.id, marks=pytest.mark.xdist_group(p.host)) for p in params],
                         indirect=True)


def _collected_areas(state: RunState) -> set[str] | None:
    """The areas any host of the run checks; None when that is every area."""
    wanted = set(state.areas) if state.areas else set(AREAS)
    per_host = [s.areas for s in state.selections.values()]
    if per_host and all(areas is not None for areas in per_host):
        wanted &= {area for areas in per_host if areas is not None for area in areas}
    return None if wanted >= set(AREAS) else wanted


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave out the suite folders of areas no host checks, before their tests are parametrised.

    Deselecting them later costs collection of every area's tests for every host, in every xdist
    worker: with eight hosts that was seconds of CPU per worker before the first check ran.
    """
    state = config.stash.get(STATE, None)
    if state is None:
        return None
    wanted = _collected_areas(state)
    if wanted is None:
        return None
    try:
        relative = collection_path.relative_to(_SUITE_DIR)
    except ValueError:
        return None
    if relative.parts and relative.parts[0] in AREAS and relative.parts[0] not in wanted:
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect other areas, and what a host's inventory vars leave out; mark known deviations as strict xfail."""
    state = config.stash.get(STATE, None)
    if state is None:
        return
    keep, drop = [], []
    for item in items:
        if not item.get_closest_marker("clause"):
            keep.append(item)
            continue
        clause = _clause_of(item, state.catalogue)
        if state.areas and clause.area not in state.areas:
            drop.append(item)
            continue
        callspec = getattr(item, "callspec", None)
        param = callspec.params.get("target") if callspec is not None else None
        if isinstance(param, TargetParam) and param.host in state.selections \
                and state.selections[param.host].excludes(clause.area, param.implementation):
            drop.append(item)  # the report says why: the host's record carries its selection
            continue
        keep.append(item)
        if not isinstance(param, TargetParam) or param.fault or param.implementation not in state.drivers:
            continue
        driver = state.drivers[param.implementation]
        deviation = find(state.deviations, clause.id, param.implementation,
                         driver.version(state.hosts.facts[param.host]))
        if deviation is not None:
            item.add_marker(pytest.mark.conformance_deviation(deviation))
            if not deviation.expired():
                # raises=AssertionError: only a non-conformance is the recorded deviation; a harness error,
                # a timeout or an unreachable host must still show as what it is.
                item.add_marker(pytest.mark.xfail(strict=True, raises=AssertionError,
                                                  reason=f"{deviation.justification} ({deviation.link})"))
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Target:
    """The host and implementation this test runs against, bound to its clause."""
    state = request.config.stash[STATE]
    param: TargetParam = request.param
    clause = _clause_of(request.node, state.catalogue)
    facts = state.hosts.facts[param.host]
    driver = state.drivers[param.implementation]
    mark = request.node.get_closest_marker("conformance_deviation")
    if mark is not None and mark.args[0].expired():
        deviation = mark.args[0]
        pytest.fail(f"{clause.id}: the known deviation for {param.implementation} expired on "
                    f"{deviation.expires}: check it again, then extend or remove it ({deviation.link})")
    availability = driver.available(facts)
    if not availability.ok:
        pytest.skip(f"{param.implementation} is not available on {param.host}: {availability.reason}")
    for mark in request.node.iter_markers("requires"):
        for requirement in mark.args:
            reason = host_facts.unmet(requirement, facts)
            if reason:
                pytest.skip(f"not applicable on {param.host}: {reason}")
    return Target(param, clause, driver, state.hosts.clients[param.host], facts)


#: Context every result of an area carries, from the host's facts where the test noted none itself: a
#: result skipped before its probe ran (a requirement the host lacks) still names the layout it was judged on.
_FACT_CONTEXT: dict[str, tuple[str, tuple[str, ...]]] = {"cgroups": ("cgroup mode", ("cgroup", "mode"))}


def _context(target: object, area: str, facts: Mapping[str, Any]) -> dict[str, Any]:
    context = dict(target.context) if isinstance(target, Target) else {}
    if area in _FACT_CONTEXT:
        key, path = _FACT_CONTEXT[area]
        value: Any = facts
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else None
        if context.get(key) is None:
            context[key] = value
    return context


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Turn each phase's outcome into a verdict and attach it to the report (xdist carries it)."""
    report: pytest.TestReport = yield
    state = item.config.stash.get(STATE, None)
    callspec = getattr(item, "callspec", None)
    param = callspec.params.get("target") if callspec is not None else None
    if state is None or not isinstance(param, TargetParam) or not item.get_closest_marker("clause"):
        return report
    if report.when == "teardown" and report.passed:
        return report
    if report.when == "setup" and report.passed:
        return report
    clause = _clause_of(item, state.catalogue)
    level = state.level_of(param.host)
    decision = decide(report, call.excinfo, clause.level, level)
    target = item.funcargs.get("target") if hasattr(item, "funcargs") else None
    entry = {
        "clause": clause.id, "test": item.nodeid, "host": param.host, "implementation": param.implementation,
        "fault": param.fault, "level": str(clause.level), "area": clause.area, "verdict": str(decision.verdict),
        "duration": round(report.duration, 6), "message": decision.message[:4000],
        "expected": decision.expected, "actual": decision.actual,
        "context": _context(target, clause.area, state.hosts.facts.get(param.host) or {}),
    }
    report.user_properties.append((RESULT_PROPERTY, json.dumps(entry)))
    if decision.verdict == Verdict.WARN and report.when == "call":
        report.outcome = "passed"
        report.sections.append(("conformance warning", f"WARN ({clause.level} clause below level {level} of "
                                f"{param.host}): {decision.message}"))
    return report


class ResultSink:
    """Collects verdicts on the controller; registered per run, so no module-level state is needed.

    pytest_runtest_logreport runs on the controller for xdist workers' reports too, and the verdict
    travels in the report's user_properties.
    """

    def __init__(self, state: RunState) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Add the verdict a report carries, if any."""
        for key, value in report.user_properties:
            if key == RESULT_PROPERTY:
                self.state.collector.add(json.loads(str(value)))


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The hosts and their facts in one line each, and the unreachable ones with the reason."""
    state = config.stash.get(STATE, None)
    if state is None:
        return []
    lines = [f"conformance run {state.run_id}: level {state.level}, implementations {', '.join(state.impls)}"]
    lines += [host_facts.one_line(h, state.hosts.facts[h]) for h in state.hosts.reachable]
    lines += [f"{h}: {_describe(s)} (inventory vars)" for h, s in sorted(state.selections.items())]
    lines += [f"{h}: UNREACHABLE: {why}" for h, why in sorted(state.hosts.unreachable.items())]
    return lines


def _describe(selection: HostSelection) -> str:
    areas = ", ".join(selection.areas) if selection.areas is not None else "all selected"
    impls = ", ".join(selection.impls) if selection.impls is not None else "all selected"
    return f"areas {areas or 'none'}; implementations {impls or 'none'}; level {selection.level}"


def _host_records(state: RunState) -> list[dict[str, Any]]:
    records = [{"name": h, "spec": state.hosts.specs.get(h, h), "reachable": True, "reason": None,
                "facts": state.hosts.facts[h]} for h in state.hosts.reachable]
    records += [{"name": h, "spec": state.hosts.specs.get(h, h), "reachable": False, "reason": why, "facts": {}}
                for h, why in sorted(state.hosts.unreachable.items())]
    for record in records:
        selection = state.selections.get(str(record["name"]))
        if selection is not None:
            record["selection"] = selection.record()
    return records


def _cleanup_hosts(state: RunState) -> None:
    """Sweep this run's leftovers on every host, then remove the probe zips (controller only).

    All hosts at once (threads: the work is waiting on each host's probe), as facts are gathered: one
    after the other, the sweeps of 8 hosts added 2.8 s to a 10 s run. Each host sweeps only its own
    names (host_side_id), so hosts that are one machine do not remove each other's probe mid-sweep.
    """
    clients = list(state.hosts.clients.items())

    def sweep(name: str, client: ProbeClient) -> bool:
        try:
            observation = client.sweep(client.run_id)  # this host's names only: see host_side_id
            problems = observation.data.get("problems") if observation.ok else [str(observation.error)]
            if problems:
                print(f"conformance: {name}: could not remove everything: {problems}", file=sys.stderr)
            return True
        except Exception as exc:  # cleanup must not hide the run's own result
            print(f"conformance: {name}: cleanup failed: {exc}; run `conformance clean`", file=sys.stderr)
            return False

    def remove(name: str, client: ProbeClient) -> None:
        try:
            client.remove_bundle()
        except Exception as exc:
            print(f"conformance: {name}: could not remove the probe: {exc}; run `conformance clean`", file=sys.stderr)

    swept = [pair for pair, ok in zip(clients, host_facts.at_once(lambda pair: sweep(*pair), clients), strict=True)
             if ok]
    host_facts.at_once(lambda pair: remove(*pair), swept)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the report (controller only) and leave the hosts as they were."""
    config = session.config
    state = config.stash.get(STATE, None)
    if state is None or hasattr(config, "workerinput"):
        return
    for host, reason in state.hosts.unreachable.items():
        state.collector.unreachable(host, reason)
    if state.hosts.unreachable and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # plain pytest must not call an unreached host a pass
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    with sigterm_held():  # the run is ending: a repeated SIGTERM must not cut the sweep short
        _cleanup_hosts(state)
    if state.report_dir is None:
        return
    from conformance.report.model import Results  # noqa: PLC0415  (report/ is only needed at the end)
    from conformance.report.writer import point_latest, write_all  # noqa: PLC0415

    doc = document(
        run_id=state.run_id, started=state.started, stopped=dt.datetime.now(dt.UTC),
        command=[Path(sys.argv[0]).name, *sys.argv[1:]], level=state.run_level,
        options={"hosts": [state.hosts.specs[h] for h in sorted(state.hosts.specs)], "impls": state.impls,
                 "areas": list(state.areas), "faults": state.with_faults, "level": str(state.level),
                 "probe_timeout": float(_option(config, "conformance_probe_timeout")),
                 "deviations": _option(config, "conformance_deviations") or "conformance/deviations.yaml",
                 "report_dir": str(state.report_dir), "pytest_args": list(config.invocation_params.args),
                 "interrupted": interrupted,
                 **({"inventory": state.inventory.path, "limit": state.inventory.limit} if state.inventory else {})},
        seeds={}, catalogue=state.catalogue, hosts=_host_records(state), collector=state.collector,
    )
    run_dir = state.report_dir / state.run_id
    write_all(Results.from_dict(doc), run_dir)
    if not interrupted:  # reports/latest always names a complete run
        point_latest(state.report_dir, run_dir)
    state.report_path = run_dir


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Verdict counts and where the report is."""
    state = config.stash.get(STATE, None)
    if state is None or hasattr(config, "workerinput"):
        return
    counts: dict[str, int] = {}
    for entry in state.collector.results.values():
        counts[entry["verdict"]] = counts.get(entry["verdict"], 0) + 1
    terminalreporter.section("conformance")
    terminalreporter.write_line("verdicts: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    for entry in state.collector.results.values():
        if entry["verdict"] in ("warn", "unreachable"):
            terminalreporter.write_line(f"{entry['verdict'].upper()} {entry['test']}: {entry['message'][:300]}")
    if state.report_path is not None:
        terminalreporter.write_line(f"report: {state.report_path}")
