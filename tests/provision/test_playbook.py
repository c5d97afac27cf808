"""The playbooks: valid, provisioning idempotent, harmless in check mode, and dockerd answering after it.

The provisioning tests run the real playbooks/provision.yml against this machine
(inventory/local.yml), so they need root on a Debian or Ubuntu host. In CI, bin/run-tests has
provisioned the host already, and a run here should change nothing.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.provision.conftest import (
    PLAYBOOKS,
    ansible_env,
    changed_tasks,
    explain,
    read_json,
    recap,
    run_playbook,
)

pytestmark = pytest.mark.slow

PROVISION = PLAYBOOKS / "provision.yml"
HOST_ENV = Path(os.environ.get("CONFORMANCE_HOST_ENV", "/etc/container-conformance/host.env"))
# Every playbook meant to be run, not task files.
PLAYBOOK_FILES = sorted(p.name for p in PLAYBOOKS.glob("*.yml"))
# choose_run.yml's message: "Run <id>: reports in <dir>".
RUN_LINE = re.compile(r'"msg": "Run \S+: reports in (\S+)"')

needs_provisionable_host = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("apt-get") is None,
    reason="provisioning needs root on a Debian or Ubuntu host",
)


@pytest.fixture(scope="module")
def converged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.CompletedProcess[str], Path]]:
    """A provisioning run on a host that was provisioned before it, and its conformance_recap file."""
    recap_file = tmp_path_factory.mktemp("recap") / "provision-recap.json"
    env = ansible_env(CONFORMANCE_RECAP_FILE=str(recap_file))
    first = run_playbook(PROVISION, env=env)
    assert first.returncode == 0, explain(first)
    # A first run that changed nothing found the host converged already: it is the second run.
    yield (first if recap(first)["changed"] == 0 else run_playbook(PROVISION, env=env)), recap_file


def test_syntax_check() -> None:
    """Every playbook in playbooks/ (one ansible-playbook call: it takes several)."""
    assert {"site.yml", "provision.yml", "run.yml", "collect.yml"} <= set(PLAYBOOK_FILES)
    result = run_playbook(PLAYBOOKS / PLAYBOOK_FILES[0], *(str(PLAYBOOKS / p) for p in PLAYBOOK_FILES[1:]),
                          "--syntax-check")
    assert result.returncode == 0, explain(result)
    assert result.stdout.count("playbook: ") == len(PLAYBOOK_FILES), result.stdout


def test_site_runs_the_steps_in_order() -> None:
    """site.yml: choose the run, provision, provision again as the idempotence pass, run and collect."""
    result = run_playbook(PLAYBOOKS / "site.yml", "--list-tasks")
    assert result.returncode == 0, explain(result)
    plays = [line.split("play #", 1)[1] for line in result.stdout.splitlines() if "play #" in line]
    names = [play.split(": ", 1)[1].split("\t")[0].strip() for play in plays]
    assert names == [
        "Choose the run",
        "Provision the container hosts",
        "Provision the container hosts",
        "Choose the run",
        "Run the conformance suite on every container host",
        "Merge the hosts' reports into the run's report",
    ], result.stdout


@needs_provisionable_host
def test_second_run_changes_nothing(converged: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, recap_file = converged
    counts = recap(result)
    assert result.returncode == 0, explain(result)
    assert counts["failed"] == 0, explain(result)
    assert counts["unreachable"] == 0, explain(result)
    assert counts["changed"] == 0, f"not idempotent, changed: {changed_tasks(result)}\n{explain(result)}"
    # The conformance_recap callback saw the same: one play, nothing changed on localhost.
    plays = read_json(recap_file)["plays"]
    assert [p["name"] for p in plays] == ["Provision the container hosts"]
    assert plays[0]["hosts"]["localhost"]["changed"] == 0, plays[0]["hosts"]["localhost"]["changed_tasks"]


@needs_provisionable_host
@pytest.mark.parametrize("playbook", ["provision.yml", "site.yml"])
def test_check_mode_changes_nothing(converged: tuple[subprocess.CompletedProcess[str], Path], playbook: str) -> None:
    """--check --diff on a converged host: nothing would change, nothing fails, no report is written."""
    result = run_playbook(PLAYBOOKS / playbook, "--check", "--diff")
    assert result.returncode == 0, explain(result)
    counts = recap(result)
    assert counts["failed"] == 0, explain(result)
    assert counts["changed"] == 0, f"check mode would change: {changed_tasks(result)}\n{explain(result)}"
    # site.yml chose a run (and says where its reports would go) but wrote nothing there.
    run_dirs = RUN_LINE.findall(result.stdout)
    assert run_dirs or playbook == "provision.yml", explain(result)
    for run_dir in run_dirs:
        assert not Path(run_dir).exists(), f"check mode wrote {run_dir}"


def host_env() -> dict[str, str]:
    """host.env as a dict; it is shell syntax, one KEY=value a line."""
    values = {}
    for line in HOST_ENV.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words:
            key, _, value = words[0].partition("=")
            values[key] = value
    return values


@needs_provisionable_host
def test_dockerd_answers_on_the_provisioned_socket(converged: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    docker_host = host_env()["DOCKER_HOST"]
    assert docker_host.startswith("unix://"), docker_host
    docker = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
    assert docker, "no docker client installed"
    result = subprocess.run(
        [docker, "-H", docker_host, "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"dockerd does not answer on {docker_host}: {result.stderr}"
    assert result.stdout.strip(), "dockerd reported no server version"
