"""`conformance run`'s new options, checked before any host is touched, and inventory host selection."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from conformance.cli import _check_run_options, build_parser, main
from conformance.hosts import HostSelectionError, Inventory, read_inventory, renamed, resolve
from conformance.selection import HostSelection, check_run_id, host_selections, host_side_id, short_id_of
from conformance.verdicts import Level

INVENTORY = """\
all:
  vars:
    conformance_level: SHOULD
  children:
    fleet:
      hosts:
        alpha:
          ansible_connection: local
          conformance_areas: [host]
        beta:
          ansible_connection: local
          conformance_areas: layers, overlay
          conformance_impls: [ref]
          conformance_level: must
"""


@pytest.fixture(scope="module")
def inventory_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inventory") / "fleet.yml"
    path.write_text(INVENTORY)
    return path


def usage(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The message of a usage error of `conformance run` (exit 2), found before pytest starts."""
    assert main(["run", *argv]) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("good", ["20261206T093000Z_ab12cd34", "nightly-7", "a", "r1.2_x"])
def test_good_run_ids(good: str) -> None:
    assert check_run_id(good) == good


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "-x", "_x", "latest", "a b", "x" * 129, "é"])
def test_bad_run_ids(bad: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        check_run_id(bad)


def test_short_id_is_what_host_side_names_can_carry() -> None:
    assert short_id_of("20261206T093000Z_ab12cd34") == "ab12cd34"
    assert short_id_of("20261128T033000Z_ab12cd") == "ab12cd"
    for odd in ("Nightly.Run", "run_UPPER", "x_" + "a" * 20):
        short = short_id_of(odd)
        assert len(short) == 8 and short.isalnum() and short == short.lower()
    assert short_id_of("Nightly.Run") == short_id_of("Nightly.Run")


def test_each_host_of_a_run_has_its_own_host_side_id() -> None:
    ids = {name: host_side_id("ab12cd34", name) for name in ("bed-1", "bed-2", "guest", "localhost")}
    assert len(set(ids.values())) == len(ids)
    for found in ids.values():
        short, tag = found.split("-")
        assert short == "ab12cd34" and len(tag) == 6 and tag == tag.lower() and tag.isalnum()
    assert host_side_id("ab12cd34", "bed-1") == ids["bed-1"]  # the same on the controller and its workers


def test_run_id_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--run-id: run id '../x'" in usage(capsys, "--report-dir", str(tmp_path), "--run-id", "../x")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "results.json").write_text("{}")
    err = usage(capsys, "--report-dir", str(tmp_path), "--run-id", "taken")
    assert "already exists and is not empty" in err and "choose another run id" in err
    (tmp_path / "fresh").mkdir()  # an empty folder (made by a playbook beforehand) is fine
    args = build_parser().parse_args(["run", "--report-dir", str(tmp_path), "--run-id", "fresh"])
    _check_run_options(args, tmp_path)


@pytest.mark.parametrize(("argv", "words"), [
    (["--as-host", "n1", "--hosts", "ssh://root@node1"], "needs --hosts local://"),
    (["--as-host", "n1", "--hosts", "local://,ssh://node2"], "needs --hosts local://"),
    (["--as-host", "n1", "--hosts", ""], "needs --hosts local://"),
    (["--as-host", "bad name"], "a host name is letters"),
    (["--as-host", "[x]"], "a host name is letters"),
    (["--limit", "web*"], "give --inventory too"),
    (["--inventory", "inv.yml", "--hosts", "local://"], "leave out --hosts"),
    (["--inventory", "inv.yml", "--as-host", "n1"], "leave out --as-host"),
    (["--inventory", "inv.yml", "--ansible-inventory", "inv.yml"], "leave out --ansible-inventory"),
    (["--inventory", "/nonexistent/inventory.yml"], "no such file"),
])
def test_host_option_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                  words: str) -> None:
    assert words in usage(capsys, "--report-dir", str(tmp_path), *argv)
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_as_host_renames_the_local_host() -> None:
    [local] = resolve(["local://"])
    node = renamed(local, "node1.example.org")
    assert (node.name, node.spec) == ("node1.example.org", "local://")
    with pytest.raises(HostSelectionError):
        renamed(local, "no/slashes")


def test_read_inventory_asks_ansible(inventory_file: Path) -> None:
    inventory = read_inventory(str(inventory_file))
    assert inventory.hosts == ("alpha", "beta")
    assert inventory.hostvars["alpha"]["conformance_level"] == "SHOULD"  # a group var, merged by Ansible
    assert inventory.hostvars["beta"]["conformance_impls"] == ["ref"]
    assert read_inventory(str(inventory_file)) is inventory  # asked once per run
    assert read_inventory(str(inventory_file), "beta").hosts == ("beta",)
    assert read_inventory(str(inventory_file), "fleet:!alpha").hosts == ("beta",)  # Ansible's patterns
    assert Inventory.from_json(inventory.to_json()) == inventory
    with pytest.raises(HostSelectionError, match="no hosts matching --limit 'gamma'"):
        read_inventory(str(inventory_file), "gamma")


def test_a_broken_inventory_is_a_usage_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("all: [nope\n")
    with pytest.raises(HostSelectionError, match=r"broken\.yml"):
        read_inventory(str(broken))


def test_host_vars_select_areas_impls_and_level(inventory_file: Path) -> None:
    selections = host_selections(read_inventory(str(inventory_file)), Level.MUST)
    alpha, beta = selections["alpha"], selections["beta"]
    assert alpha == HostSelection(("host",), None, Level.SHOULD)
    assert beta == HostSelection(("layers", "overlay"), ("ref",), Level.MUST)
    assert alpha.excludes("host", "kernel") is None
    assert alpha.excludes("layers", "ref") == "not selected for this host by inventory var conformance_areas"
    assert beta.excludes("layers", "docker") == "not selected for this host by inventory var conformance_impls"
    assert beta.record() == {"areas": ["layers", "overlay"], "impls": ["ref"], "level": "MUST",
                             "source": "inventory"}


@pytest.mark.parametrize(("hostvars", "words"), [
    ({"conformance_areas": ["host", "hosts"]}, "unknown area(s) hosts"),
    ({"conformance_impls": "ref,nonesuch"}, "unknown implementation(s) nonesuch"),
    ({"conformance_level": "OPTIONAL"}, "must be MUST, SHOULD or MAY"),
    ({"conformance_areas": {"host": True}}, "list of names or a comma-separated string"),
])
def test_bad_host_vars_are_usage_errors(hostvars: dict[str, object], words: str) -> None:
    inventory = Inventory("inv.yml", None, ("alpha",), {"alpha": hostvars})
    with pytest.raises(pytest.UsageError, match=r"inventory inv\.yml: host alpha") as caught:
        host_selections(inventory, Level.MUST)
    assert words in str(caught.value)


def test_help_lists_the_new_options() -> None:
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    text = run.format_help()
    for option in ("--inventory", "--limit", "--as-host", "--run-id"):
        assert option in text
    assert isinstance(build_parser().parse_args(["report", "merge", "--hosts-dir", "h", "-o", "o"]),
                      argparse.Namespace)


@pytest.mark.parametrize(("given", "swept"), [("20261206T093000Z_ab12cd34", "ab12cd34"), ("ab12cd", "ab12cd"),
                                              ("Nightly.Run", short_id_of("Nightly.Run"))])
def test_clean_takes_a_run_id_or_its_short_id(monkeypatch: pytest.MonkeyPatch, given: str, swept: str) -> None:
    from conformance.hosts import HostError
    from conformance.transport import ProbeClient

    seen: list[str | None] = []

    def sweep(self: ProbeClient, run_id: str | None, dry_run: bool = False) -> None:
        seen.append(run_id)
        raise HostError("stop here")

    monkeypatch.setattr(ProbeClient, "sweep", sweep)
    assert main(["clean", "--run-id", given, "--dry-run"]) == 3
    assert seen == [swept]
