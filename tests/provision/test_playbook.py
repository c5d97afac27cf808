"""playbooks/site.yml: valid, idempotent, harmless in check mode, and it leaves dockerd answering.

These run the real playbook against this machine (inventory/local.yml), so they need root on a
Debian or Ubuntu host. In CI, bin/run-tests has provisioned the host already, and a run here
should change nothing.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "playbooks" / "site.yml"
# The ansible-playbook of the interpreter running the tests (the venv's); not resolved, since
# .venv/bin/python is a link to the system interpreter.
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
HOST_ENV = Path(os.environ.get("CONFORMANCE_HOST_ENV", "/etc/container-conformance/host.env"))
# The first provisioning of a bare host installs ~60 packages.
PLAYBOOK_TIMEOUT_S = 1800
RECAP_LINE = re.compile(r"^localhost\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$", re.MULTILINE)

needs_provisionable_host = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("apt-get") is None,
    reason="provisioning needs root on a Debian or Ubuntu host",
)


def run_playbook(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ansible-playbook on site.yml from the repository root, one run at a time."""
    env = {
        **os.environ,
        # Explicit: Ansible ignores ./ansible.cfg in a world-writable directory.
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    # Two runs at once (xdist workers) would fight over dpkg's lock and start dockerd twice.
    with SITE.open() as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return subprocess.run(
            [str(ANSIBLE_PLAYBOOK), str(SITE.relative_to(REPO)), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=PLAYBOOK_TIMEOUT_S,
            check=False,
        )


def recap(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """The PLAY RECAP counts for localhost: {'ok': 14, 'changed': 0, ...}."""
    match = RECAP_LINE.search(result.stdout)
    assert match, f"no PLAY RECAP line for localhost:\n{explain(result)}"
    return {key: int(value) for key, value in (pair.split("=") for pair in match["counts"].split())}


def explain(result: subprocess.CompletedProcess[str]) -> str:
    """The tail of a run's output, for assertion messages."""
    return f"rc={result.returncode}\n--- stdout (tail)\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-3000:]}"


def changed_tasks(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Names of the tasks that reported a change, for assertion messages."""
    names, current = [], ""
    for line in result.stdout.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            current = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed:"):
            names.append(current)
    return names


@pytest.fixture(scope="module")
def converged() -> Iterator[subprocess.CompletedProcess[str]]:
    """A provisioning run on a host that was provisioned before it."""
    first = run_playbook()
    assert first.returncode == 0, explain(first)
    # A first run that changed nothing found the host converged already: it is the second run.
    yield first if recap(first)["changed"] == 0 else run_playbook()


def test_syntax_check() -> None:
    result = run_playbook("--syntax-check")
    assert result.returncode == 0, explain(result)


@needs_provisionable_host
def test_second_run_changes_nothing(converged: subprocess.CompletedProcess[str]) -> None:
    counts = recap(converged)
    assert converged.returncode == 0, explain(converged)
    assert counts["failed"] == 0, explain(converged)
    assert counts["unreachable"] == 0, explain(converged)
    assert counts["changed"] == 0, f"not idempotent, changed: {changed_tasks(converged)}\n{explain(converged)}"


@needs_provisionable_host
def test_check_mode_passes(converged: subprocess.CompletedProcess[str]) -> None:
    result = run_playbook("--check")
    assert result.returncode == 0, explain(result)
    assert recap(result)["failed"] == 0, explain(result)


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
def test_dockerd_answers_on_the_provisioned_socket(converged: subprocess.CompletedProcess[str]) -> None:
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
