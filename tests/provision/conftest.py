"""Running ansible-playbook from the tests: one run at a time, with the repository's ansible.cfg.

Every playbook run of tests/provision/ goes through run_playbook(), which holds an exclusive flock
on playbooks/site.yml: two runs at once (xdist workers) would fight over dpkg's lock and start
dockerd twice, and the cheap runs wait behind a provisioning run rather than race it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
SITE = PLAYBOOKS / "site.yml"
# The ansible-playbook of the interpreter running the tests (the venv's); not resolved, since
# .venv/bin/python is a link to the system interpreter.
VENV_BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = VENV_BIN / "ansible-playbook"
# The first provisioning of a bare host installs ~60 packages.
PLAYBOOK_TIMEOUT_S = 1800
RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$", re.MULTILINE)


def ansible_env(**extra: str) -> dict[str, str]:
    """The environment for Ansible tools: this repository's ansible.cfg, no colour, the venv on PATH."""
    env = {
        **os.environ,
        # Explicit: Ansible ignores ./ansible.cfg in a world-writable directory.
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("CONFORMANCE_RECAP_FILE", None)
    env.update(extra)
    return env


def run_playbook(playbook: Path | str, *args: str, env: Mapping[str, str] | None = None,
                 timeout: float = PLAYBOOK_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run ansible-playbook from the repository root, one run at a time (see the module docstring)."""
    path = Path(playbook)
    shown = str(path.relative_to(REPO)) if path.is_absolute() and path.is_relative_to(REPO) else str(path)
    with SITE.open() as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return subprocess.run(
            [str(ANSIBLE_PLAYBOOK), shown, *args],
            cwd=REPO,
            env=dict(env) if env is not None else ansible_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def recap(result: subprocess.CompletedProcess[str], host: str = "localhost") -> dict[str, int]:
    """The PLAY RECAP counts for one host: {'ok': 14, 'changed': 0, ...}."""
    for match in RECAP_LINE.finditer(result.stdout):
        if match["host"] == host:
            return {key: int(value) for key, value in (pair.split("=") for pair in match["counts"].split())}
    raise AssertionError(f"no PLAY RECAP line for {host}:\n{explain(result)}")


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


def read_json(path: Path) -> Any:
    """A JSON file the playbooks or the recap callback wrote."""
    return json.loads(path.read_text(encoding="utf-8"))
