"""Hosts in the report: one header per host over its columns (kernel, cgroup mode), selections and levels."""

from __future__ import annotations

from dataclasses import replace
from html.parser import HTMLParser

from conformance.report.html import render_html
from conformance.report.model import Results, summarize
from conformance.verdicts import Level, Verdict
from tests.report.hostsdir_fixtures import per_host


class Heads(HTMLParser):
    """The matrix's header cells: (class, colspan, data-host, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, int, str, str]] = []
        self._open: list[str | None] | None = None
        self._in_matrix = False
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id") == "matrix":
            self._in_matrix = True
        if self._in_matrix and tag == "th" and "data-host" in a:
            self._open = [a.get("class"), a.get("colspan") or "1", a.get("data-host")]
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "th" and self._open is not None:
            cls, span, host = self._open
            self.cells.append((cls or "", int(span or 1), host or "", " ".join("".join(self._text).split())))
            self._open = None
        if tag == "thead":
            self._in_matrix = False


def heads(page: str) -> list[tuple[str, int, str, str]]:
    parser = Heads()
    parser.feed(page)
    return parser.cells


def two_hosts(sample: Results) -> Results:
    a, b = per_host(sample, "alpha", "6.6.0", "v2"), per_host(sample, "beta", "5.10.0", "hybrid")
    return Results(a.run, a.clauses, (*a.hosts, *b.hosts), (*a.results, *b.results))


def test_one_header_per_host_names_its_kernel_and_cgroup_mode(sample: Results) -> None:
    results = two_hosts(sample)
    cells = heads(render_html(results))
    hosts = [c for c in cells if "hosthead" in c[0]]
    per_host_columns = {h: sum(1 for c in results.columns() if c.host == h) for h in ("alpha", "beta")}
    assert [(h[2], h[1]) for h in hosts] == [("alpha", per_host_columns["alpha"]), ("beta", per_host_columns["beta"])]
    assert "kernel 6.6.0 · cgroup v2" in hosts[0][3] and "kernel 5.10.0 · cgroup hybrid" in hosts[1][3]
    columns = [c for c in cells if "hosthead" not in c[0]]
    assert [c[2] for c in columns] == [c.host for c in results.columns()]
    assert all(c[3].startswith(str(k.implementation)) for c, k in zip(columns, results.columns(), strict=True))
    firsts = [c[2] for c in columns if "first" in c[0].split()]
    assert firsts == ["alpha", "beta"]  # a visible boundary where one host's columns end


def test_unreachable_and_failed_hosts_get_a_placeholder_column(sample: Results) -> None:
    cells = heads(render_html(sample))
    ghost = [c for c in cells if c[2] == "ghost"]
    assert ghost[0][0] == "hosthead st-unreachable" and "kernel ? · cgroup ?" in ghost[0][3]
    assert ghost[1][3] == "unreachable"


def test_cells_left_out_by_a_host_selection_say_why(sample: Results) -> None:
    results = two_hosts(sample)
    beta = replace(results.hosts[1], selection={"areas": ["host"], "impls": None, "level": "MUST",
                                                "source": "inventory"})
    results = replace(results, hosts=(results.hosts[0], beta),
                      results=tuple(r for r in results.results if r.host == "alpha" or r.area == "host"))
    page = render_html(results)
    assert "not selected for this host by inventory var conformance_areas (host)" in page
    assert "areas host; implementations all; level MUST (inventory vars)" in page


def test_each_host_is_judged_at_its_own_level(sample: Results) -> None:
    """A SHOULD clause's timeout counts on a host at SHOULD, not on one at MUST, whatever the run's level."""
    results = two_hosts(sample)
    should = next(r for r in results.results if r.host == "beta" and r.level is Level.SHOULD and not r.fault)
    timed_out = replace(should, verdict=Verdict.TIMEOUT, message="timed out")
    rows = tuple(timed_out if r is should else r for r in results.results)
    run = replace(results.run, level=Level.SHOULD)

    def at(level: str) -> Results:
        beta = replace(results.hosts[1], selection={"areas": None, "impls": None, "level": level, "source": "run"})
        return replace(results, run=run, hosts=(results.hosts[0], beta), results=rows)

    assert summarize(at("MUST")).conformant
    assert not summarize(at("SHOULD")).conformant
    assert not summarize(at("MUST"), Level.SHOULD).conformant  # an explicit level still applies to every host
