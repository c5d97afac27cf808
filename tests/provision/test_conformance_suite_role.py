"""Role conformance_suite installs the suite into a venv from a controller-built wheelhouse, once.

Installs into a temporary home on localhost (no package index used on the "host" side), twice:
the second run must change nothing. The controller's wheelhouse cache is the default one
(~/.cache/container-conformance/wheelhouse), so later runs of this test reuse it and only the first
one on a machine downloads the dependencies' wheels. The project's wheel is built from a snapshot
of the sources taken before the first run, so an edit made meanwhile cannot count as a change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.provision.conftest import REPO, changed_tasks, explain, recap, run_playbook

pytestmark = pytest.mark.slow

PLAY = """\
- name: Install the suite into a temporary home
  hosts: localhost
  gather_subset: ["!all"]
  roles:
    - role: conformance_suite
"""


def snapshot(project: Path) -> Path:
    """What the project's wheel is built from (wheelhouse.py PROJECT_FILES and the package), copied."""
    shutil.copytree(REPO / "conformance", project / "conformance", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, project / name)
    return project


def install(tmp_path: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    project = tmp_path / "project"
    if not project.exists():
        snapshot(project)
    return run_playbook(play, "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
                        "-e", f"conformance_suite_home={home}", "-e", f"conformance_suite_project_dir={project}",
                        *args, timeout=900)


@pytest.mark.skipif(os.geteuid() != 0, reason="installs like the role does on a host: as root")
def test_second_install_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = install(tmp_path, home)
    assert first.returncode == 0, explain(first)
    assert recap(first)["changed"] > 0, explain(first)

    venv = home / "venv"
    version = subprocess.run([str(venv / "bin" / "conformance"), "--version"], capture_output=True, text=True,
                             timeout=60, check=False)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("container-conformance "), version.stdout
    # A venv of its own, made by the host's Python (no pip inside: it ran from its wheel).
    assert (venv / "pyvenv.cfg").exists()
    assert (venv / ".conformance-wheelhouse.sha256").read_text().strip()
    assert not (home / "wheelhouse.tar").exists()

    second = install(tmp_path, home)
    assert second.returncode == 0, explain(second)
    assert recap(second)["changed"] == 0, f"not idempotent, changed: {changed_tasks(second)}\n{explain(second)}"

    check = install(tmp_path, home, "--check", "--diff")
    assert check.returncode == 0, explain(check)
    assert recap(check)["changed"] == 0, f"check mode would change: {changed_tasks(check)}\n{explain(check)}"
