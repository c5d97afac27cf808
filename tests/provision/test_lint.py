"""ansible-lint's production profile passes over the playbooks, roles and inventories (.ansible-lint)."""

from __future__ import annotations

import subprocess

import pytest

from tests.provision.conftest import REPO, VENV_BIN, ansible_env

pytestmark = pytest.mark.slow

ANSIBLE_LINT = VENV_BIN / "ansible-lint"


@pytest.mark.skipif(not ANSIBLE_LINT.exists(), reason="ansible-lint is not installed (pip install -e '.[test]')")
def test_ansible_lint_production_profile_passes() -> None:
    result = subprocess.run([str(ANSIBLE_LINT), "--nocolor"], cwd=REPO, env=ansible_env(), capture_output=True,
                            text=True, timeout=600, check=False)
    output = f"{result.stdout[-8000:]}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, output
    assert "Profile 'production' was required, and it passed" in output, output
