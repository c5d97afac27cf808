"""The conformance_recap callback (playbooks/callback_plugins/): per play and host, counts and changed tasks.

A tiny playbook against localhost writes a file in a temporary folder twice, the second time as
site.yml's idempotence pass (play variable conformance_provision_pass, diff mode on); the recap
must say what each pass changed and show the diff of a change on the second pass.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.provision.conftest import ansible_env, explain, read_json, run_playbook

pytestmark = pytest.mark.slow

# The file is written with `content`; the first pass and the second may ask for different content.
INNER = """\
- name: Write the file
  hosts: localhost
  gather_facts: false
  diff: "{{ conformance_provision_pass | default('') == 'idempotence' }}"
  tasks:
    - name: Write the file
      ansible.builtin.copy:
        dest: "{{ target }}"
        content: "{{ second_content if conformance_provision_pass | default('') == 'idempotence' else 'one' }}\\n"
        mode: "0644"
    - name: A task that is skipped
      ansible.builtin.debug:
        msg: never
      when: false
    - name: A failure that is ignored
      ansible.builtin.command:
        argv: ["false"]
      changed_when: false
      ignore_errors: true
"""

OUTER = """\
- name: First pass
  ansible.builtin.import_playbook: inner.yml
- name: Second pass
  ansible.builtin.import_playbook: inner.yml
  vars:
    conformance_provision_pass: idempotence
"""


def run_passes(tmp_path: Path, second_content: str, recap_file: Path | None) -> dict[str, Any]:
    """Run both passes; return the recap the callback wrote (an empty dict when it wrote none)."""
    (tmp_path / "inner.yml").write_text(INNER)
    (tmp_path / "outer.yml").write_text(OUTER)
    env = ansible_env(**({"CONFORMANCE_RECAP_FILE": str(recap_file)} if recap_file else {}))
    result = run_playbook(
        tmp_path / "outer.yml",
        "-i", "localhost,", "-c", "local",
        "-e", f"ansible_python_interpreter={sys.executable}",
        "-e", f"target={tmp_path / 'file.txt'}",
        "-e", f"second_content={second_content}",
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, explain(result)
    return read_json(recap_file) if recap_file and recap_file.exists() else {}


def test_an_idempotent_second_pass_changes_nothing(tmp_path: Path) -> None:
    recap = run_passes(tmp_path, "one", tmp_path / "out" / "recap.json")
    assert recap["format"] == "conformance-ansible-recap/1"
    assert recap["playbook"].endswith("outer.yml")
    first, second = recap["plays"]
    assert (first["name"], first["pass"]) == ("Write the file", None)
    assert second["pass"] == "idempotence"
    # ok counts changed results and ignored failures, as Ansible's PLAY RECAP does.
    assert first["hosts"]["localhost"] == {
        "ok": 2, "changed": 1, "failed": 0, "skipped": 1, "unreachable": False,
        "changed_tasks": [{"task": "Write the file", "diff": None}],
    }
    assert second["hosts"]["localhost"] == {
        "ok": 2, "changed": 0, "failed": 0, "skipped": 1, "unreachable": False, "changed_tasks": [],
    }


def test_a_change_on_the_second_pass_is_recorded_with_its_diff(tmp_path: Path) -> None:
    recap = run_passes(tmp_path, "two", tmp_path / "recap.json")
    second = recap["plays"][1]["hosts"]["localhost"]
    assert second["changed"] == 1
    [task] = second["changed_tasks"]
    assert task["task"] == "Write the file"
    target = tmp_path / "file.txt"
    assert task["diff"] == f"--- before: {target}\n+++ after: {target}\n@@ -1 +1 @@\n-one\n+two\n"


def test_nothing_is_written_without_a_file_to_write_to(tmp_path: Path) -> None:
    assert run_passes(tmp_path, "one", None) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "inner.yml", "outer.yml"]


def test_the_fact_conformance_recap_file_names_the_file(tmp_path: Path) -> None:
    """Without CONFORMANCE_RECAP_FILE, a task that sets the fact (choose_run.yml does) chooses the file."""
    recap_file = tmp_path / "run" / "provision-recap.json"
    (tmp_path / "play.yml").write_text(
        "- name: Choose\n  hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - name: Name the recap file\n      ansible.builtin.set_fact:\n"
        f"        conformance_recap_file: {recap_file}\n"
        "    - name: Change something\n      ansible.builtin.command:\n        argv: ['true']\n"
    )
    result = run_playbook(tmp_path / "play.yml", "-i", "localhost,", "-c", "local",
                          "-e", f"ansible_python_interpreter={sys.executable}", timeout=300)
    assert result.returncode == 0, explain(result)
    [play] = read_json(recap_file)["plays"]
    assert play["hosts"]["localhost"]["changed_tasks"] == [{"task": "Change something", "diff": None}]
