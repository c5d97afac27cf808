"""run.yml and collect.yml: a fan-out run over two hosts, one of which cannot be reached.

"localhost" runs one real clause with the checkout's venv (as inventory/local.yml has it) into a
temporary home; "unreachable-host" is 127.0.0.1 on port 9, where nothing listens, so ssh is refused
at once. The run must leave each host's files and status.json under reports/<run-id>/hosts/, merge
them with the controller's `conformance report merge`, point latest at the run, and fail the
playbook because one host did not run. collect.yml then fetches the same run again.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.provision.conftest import PLAYBOOKS, ansible_env, explain, read_json, run_playbook

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the suite's host area runs as root"),
    pytest.mark.skipif(shutil.which("ssh") is None, reason="the unreachable host is an ssh host"),
]

# One quick clause: it reads /proc/filesystems.
CLAUSE = "overlay_is_listed_in_proc_filesystems"
INVENTORY = f"""\
all:
  children:
    container_hosts:
      hosts:
        localhost:
          ansible_connection: local
          ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
          conformance_suite_install: false
          conformance_suite_venv: "{{{{ ansible_playbook_python | dirname | dirname }}}}"
        unreachable-host:
          ansible_host: 127.0.0.1
          ansible_port: 9
          ansible_ssh_common_args: -o ConnectTimeout=5 -o BatchMode=yes -o StrictHostKeyChecking=no
      vars:
        conformance_areas: [host]
        conformance_impls: [kernel]
        conformance_run_args: ["--", "-k", "{CLAUSE}"]
"""
RUN_LINE = re.compile(r'"msg": "Run (\S+): reports in (\S+)"')
HOST_FILES = ["report.html", "results.json", "run.log", "status.json", "summary.md", "junit.xml"]


class FleetRun(NamedTuple):
    result: subprocess.CompletedProcess[str]
    run_id: str
    run_dir: Path
    args: list[str]


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetRun]:
    tmp = tmp_path_factory.mktemp("fleet")
    inventory = tmp / "inventory.yml"
    inventory.write_text(INVENTORY)
    args = ["-i", str(inventory), "-e", f"conformance_reports_dir={tmp / 'reports'}",
            "-e", f"conformance_suite_home={tmp / 'home'}"]
    result = run_playbook(PLAYBOOKS / "run.yml", *args, timeout=900)
    found = RUN_LINE.search(result.stdout)
    assert found, explain(result)
    yield FleetRun(result, found[1], Path(found[2]), args)


def test_the_run_id_looks_like_a_run_folder(fleet_run: FleetRun) -> None:
    assert re.fullmatch(r"\d{8}T\d{6}Z_[0-9a-f]{8}", fleet_run.run_id), fleet_run.run_id
    assert fleet_run.run_dir.name == fleet_run.run_id


def test_a_host_that_did_not_run_fails_the_playbook(fleet_run: FleetRun) -> None:
    result = fleet_run.result
    assert result.returncode == 2, explain(result)
    assert f"Run {fleet_run.run_id} does not conform, or a host did not run it" in result.stdout, explain(result)


def test_the_reachable_host_ran_and_its_files_came_home(fleet_run: FleetRun) -> None:
    host_dir = fleet_run.run_dir / "hosts" / "localhost"
    assert sorted(p.name for p in host_dir.iterdir()) == sorted(HOST_FILES), explain(fleet_run.result)
    status = read_json(host_dir / "status.json")
    assert status["host"] == "localhost"
    assert status["state"] == "ran", status
    assert status["rc"] in (0, 1), status
    results = read_json(host_dir / "results.json")
    assert [h["name"] for h in results["hosts"]] == ["localhost"]  # --as-host
    assert results["run"]["id"] == fleet_run.run_id  # --run-id


def test_the_unreachable_host_is_recorded(fleet_run: FleetRun) -> None:
    host_dir = fleet_run.run_dir / "hosts" / "unreachable-host"
    assert sorted(p.name for p in host_dir.iterdir()) == ["status.json"]
    status = read_json(host_dir / "status.json")
    assert status["state"] == "unreachable", status
    assert status["rc"] is None
    assert "port 9" in status["message"], status


def test_the_merged_report_names_both_hosts(fleet_run: FleetRun) -> None:
    merged = read_json(fleet_run.run_dir / "results.json")
    assert sorted(h["name"] for h in merged["hosts"]) == ["localhost", "unreachable-host"]
    for name in ("junit.xml", "report.html", "summary.md"):
        assert (fleet_run.run_dir / name).is_file(), name
    assert "unreachable-host" in (fleet_run.run_dir / "summary.md").read_text()
    latest = fleet_run.run_dir.parent / "latest"
    assert latest.is_symlink() and os.readlink(latest) == fleet_run.run_id


def test_collect_fetches_the_run_again(fleet_run: FleetRun) -> None:
    """collect.yml for the same run id: the same files, localhost's status (with its rc) kept."""
    status_file = fleet_run.run_dir / "hosts" / "localhost" / "status.json"
    before = status_file.read_text()
    (fleet_run.run_dir / "hosts" / "localhost" / "results.json").unlink()
    result = run_playbook(PLAYBOOKS / "collect.yml", *fleet_run.args, "-e", f"conformance_run_id={fleet_run.run_id}",
                          timeout=600)
    assert result.returncode == 2, explain(result)
    assert (fleet_run.run_dir / "hosts" / "localhost" / "results.json").is_file(), explain(result)
    assert status_file.read_text() == before
    assert read_json(fleet_run.run_dir / "hosts" / "unreachable-host" / "status.json")["state"] == "unreachable"


def test_collect_needs_a_run_id(fleet_run: FleetRun) -> None:
    result = run_playbook(PLAYBOOKS / "collect.yml", *fleet_run.args, timeout=300)
    assert result.returncode != 0
    assert "Which run? Pass its id" in result.stdout, explain(result)


def test_a_limit_without_localhost_still_chooses_and_merges(tmp_path: Path) -> None:
    """--limit names only a container host (here the one that cannot be reached): the run is still
    chosen and merged on the controller, and the merged report has that host, unreachable."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(INVENTORY)
    result = run_playbook(PLAYBOOKS / "run.yml", "-i", str(inventory), "--limit", "unreachable-host",
                          "-e", f"conformance_reports_dir={tmp_path / 'reports'}",
                          "-e", f"conformance_suite_home={tmp_path / 'home'}", timeout=300)
    found = RUN_LINE.search(result.stdout)
    assert found, explain(result)
    assert result.returncode == 2, explain(result)
    run_dir = Path(found[2])
    merged = read_json(run_dir / "results.json")
    assert [(h["name"], h["reachable"]) for h in merged["hosts"]] == [("unreachable-host", False)], explain(result)
    assert not (run_dir / "hosts" / "localhost").exists()


def test_one_run_and_one_merge_under_the_free_strategy(tmp_path: Path) -> None:
    """ANSIBLE_STRATEGY=free (a user's default) must not make every host choose a run or merge one."""
    inventory = tmp_path / "inventory.yml"
    unreachable = INVENTORY[INVENTORY.index("        unreachable-host:"):INVENTORY.index("      vars:")]
    inventory.write_text(INVENTORY.replace(unreachable, unreachable + unreachable.replace("unreachable-host",
                                                                                          "unreachable-too")))
    result = run_playbook(PLAYBOOKS / "run.yml", "-i", str(inventory), "--limit", "unreachable-*",
                          "-e", f"conformance_reports_dir={tmp_path / 'reports'}",
                          "-e", f"conformance_suite_home={tmp_path / 'home'}",
                          env={**ansible_env(), "ANSIBLE_STRATEGY": "free"}, timeout=300)
    # Ansible's own word for it; what then goes wrong (two run folders, a run line naming another run's
    # folder, two merges) depends on which host wins a race.
    assert "run_once with the free strategy" not in result.stdout + result.stderr, explain(result)
    assert len(set(RUN_LINE.findall(result.stdout))) == 1, explain(result)
    assert result.stdout.count("TASK [Merge the hosts' reports]") == 1, explain(result)
    assert sorted(p.name for p in (tmp_path / "reports").iterdir() if p.name != "latest") == \
        [RUN_LINE.findall(result.stdout)[0][0]], explain(result)


CRASHING_SUITE = """\
#!/bin/sh
# Stands in for a `conformance run` that dies mid-run: it says what it is doing, then is killed.
echo "conformance run $*: checking the host area" && echo "collected 23 items" && kill -9 $$
"""


def test_a_host_whose_run_dies_mid_way_is_recorded_and_the_others_complete(tmp_path: Path) -> None:
    """A host whose `conformance run` is killed part-way (SIGKILL) gets status failed with the end of its
    log, the other host's run completes, and the merged report has both."""
    venv = tmp_path / "crashing-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "conformance").write_text(CRASHING_SUITE)
    (venv / "bin" / "conformance").chmod(0o755)
    crashing = (f"        crashing-host:\n          ansible_connection: local\n"
                f"          ansible_python_interpreter: \"{{{{ ansible_playbook_python }}}}\"\n"
                f"          conformance_suite_install: false\n          conformance_suite_venv: {venv}\n"
                f"          conformance_suite_home: {tmp_path / 'crashing-home'}\n")
    local_home = f"          conformance_suite_home: {tmp_path / 'home'}\n"
    inventory = tmp_path / "inventory.yml"
    text = INVENTORY.replace("        unreachable-host:", crashing + "        unreachable-host:")
    text = text.replace('ansible_playbook_python | dirname | dirname }}"\n',
                        'ansible_playbook_python | dirname | dirname }}"\n' + local_home, 1)
    inventory.write_text(text)
    result = run_playbook(PLAYBOOKS / "run.yml", "-i", str(inventory), "--limit", "localhost,crashing-host",
                          "-e", f"conformance_reports_dir={tmp_path / 'reports'}", timeout=600)
    found = RUN_LINE.search(result.stdout)
    assert found, explain(result)
    assert result.returncode == 2, explain(result)
    run_dir = Path(found[2])
    status = read_json(run_dir / "hosts" / "crashing-host" / "status.json")
    assert status["state"] == "failed", status
    assert "collected 23 items" in status["message"], status  # the end of its log says how far it got
    assert read_json(run_dir / "hosts" / "localhost" / "status.json")["state"] == "ran"
    merged = read_json(run_dir / "results.json")
    assert sorted(h["name"] for h in merged["hosts"]) == ["crashing-host", "localhost"], explain(result)
    assert {r["host"] for r in merged["results"] if r["verdict"] == "pass"} == {"localhost"}
    assert "crashing-host" in (run_dir / "summary.md").read_text()
