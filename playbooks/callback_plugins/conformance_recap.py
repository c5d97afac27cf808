"""Ansible callback: what each play did on each host, as JSON the conformance report can show.

Molecule's idempotence step names the tasks that changed and nothing more (ansible/molecule#2100);
this recap keeps, per play and host, the counts of the PLAY RECAP and every changed task with its
diff, so the merged report can say "provisioning: NOT idempotent: 2 tasks changed on the second
run" and show what they changed. The play variable ``conformance_provision_pass`` tells the passes
apart (site.yml sets it to ``idempotence`` on its second provisioning).

Where it writes:

* ``$CONFORMANCE_RECAP_FILE`` when that is set (the caller chose the file);
* otherwise the path a task sets as the fact ``conformance_recap_file`` (playbooks/choose_run.yml does,
  when site.yml asks for ``reports/<run-id>/provision-recap.json``): the plugin cannot read play
  variables that are only known once the play runs, but it sees every task's facts;
* otherwise nowhere.

The file is rewritten after every task result (to a temporary file, then renamed), so a playbook
that dies still leaves a recap of what it did until then. This file is loaded by Ansible, not
imported by the package: ruff checks it, mypy does not (pyproject's mypy ``packages`` are
``conformance`` and ``tools``); ``mypy --strict`` on it alone passes.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ansible.plugins.callback import CallbackBase  # type: ignore[import-untyped]

DOCUMENTATION = """
    name: conformance_recap
    type: aggregate
    short_description: write per-play, per-host recaps with changed tasks and diffs as JSON
    description:
      - Writes the recap (format conformance-ansible-recap/1) after every task result, to the file
        named by CONFORMANCE_RECAP_FILE, or to the fact conformance_recap_file once a task sets it.
      - Each play records its conformance_provision_pass play variable, and per host the counts ok,
        changed, failed, skipped, whether it was unreachable, and each changed task with its diff.
    requirements:
      - enabled in callbacks_enabled (ansible.cfg)
    options: {}
"""

FORMAT = "conformance-ansible-recap/1"
ENV_VAR = "CONFORMANCE_RECAP_FILE"
FACT = "conformance_recap_file"
PASS_VAR = "conformance_provision_pass"


def unified_diff(diff: Any) -> str | None:
    """One text for a task's ``diff`` result (a dict or a list of them, as modules return it).

    The default callback's ``_get_diff`` colours its lines for a terminal; this is the same
    before/after unified diff without colour, plus the modules' ready-made ``prepared`` text.
    """
    parts: list[str] = []
    for entry in diff if isinstance(diff, list) else [diff]:
        if not isinstance(entry, Mapping):
            continue
        if "before" in entry and "after" in entry:
            before, after = (_text(entry[key]) for key in ("before", "after"))
            header_before = f"before: {entry['before_header']}" if "before_header" in entry else "before"
            header_after = f"after: {entry['after_header']}" if "after_header" in entry else "after"
            parts.extend(
                difflib.unified_diff(_lines(before), _lines(after), fromfile=header_before, tofile=header_after)
            )
        if entry.get("prepared"):
            parts.append(str(entry["prepared"]))
    text = "".join(parts)
    return text or None


def _lines(text: str) -> list[str]:
    """Lines for difflib, each ending in a newline; a missing last one is marked as diff(1) does."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def _text(value: Any) -> str:
    """A diff side as text: structures (a file's state, a package list) as sorted JSON lines."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, default=str) + "\n"


class CallbackModule(CallbackBase):  # type: ignore[misc]
    """Collects play, host and task outcomes and writes them as one JSON document."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "conformance_recap"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display: Any = None) -> None:
        super().__init__(display=display)
        self._path: Path | None = Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else None
        self._recap: dict[str, Any] = {"format": FORMAT, "playbook": None, "plays": []}

    # -- playbook and play structure

    def v2_playbook_on_start(self, playbook: Any) -> None:
        """Record which playbook ran (the one given to ansible-playbook)."""
        self._recap["playbook"] = str(getattr(playbook, "_file_name", "") or "") or None

    def v2_playbook_on_play_start(self, play: Any) -> None:
        """Open a play; its pass is the play variable, as written (import_playbook vars included)."""
        value = (getattr(play, "vars", None) or {}).get(PASS_VAR)
        self._recap["plays"].append(
            {"name": play.get_name().strip(), "pass": None if value is None else str(value), "hosts": {}}
        )
        self._write()

    # -- task results

    def v2_runner_on_ok(self, result: Any) -> None:
        """An ok result, changed or not; a changed one is listed with its diff."""
        self._adopt_path(result.result)
        counts = self._host(result)
        counts["ok"] += 1
        if result.result.get("changed", False):
            counts["changed"] += 1
            counts["changed_tasks"].append({"task": result.task.get_name(), "diff": self._diff(result.result)})
        self._write()

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        """A failure; an ignored one counts as ok, as in Ansible's PLAY RECAP."""
        counts = self._host(result)
        counts["ok" if ignore_errors else "failed"] += 1
        self._write()

    def v2_runner_on_skipped(self, result: Any) -> None:
        """A skipped task."""
        self._host(result)["skipped"] += 1
        self._write()

    def v2_runner_on_unreachable(self, result: Any) -> None:
        """A host Ansible could not reach."""
        self._host(result)["unreachable"] = True
        self._write()

    # -- helpers

    def _host(self, result: Any) -> dict[str, Any]:
        """The counts of the result's host in the current play (a play is always open here)."""
        if not self._recap["plays"]:  # a result before any play: cannot happen with ansible-playbook
            self._recap["plays"].append({"name": "", "pass": None, "hosts": {}})
        hosts: dict[str, dict[str, Any]] = self._recap["plays"][-1]["hosts"]
        return hosts.setdefault(
            result.host.get_name(),
            {"ok": 0, "changed": 0, "failed": 0, "skipped": 0, "unreachable": False, "changed_tasks": []},
        )

    @staticmethod
    def _diff(result: Mapping[str, Any]) -> str | None:
        """The task's diff, or the diffs of its changed loop items, or None (no --diff, or none given)."""
        if "diff" in result:
            return unified_diff(result["diff"])
        items = [item for item in result.get("results", []) if isinstance(item, Mapping) and item.get("changed")]
        texts = [text for item in items if "diff" in item and (text := unified_diff(item["diff"]))]
        return "".join(texts) or None

    def _adopt_path(self, result: Mapping[str, Any]) -> None:
        """Take the fact conformance_recap_file as the output when the environment named none."""
        if os.environ.get(ENV_VAR):
            return
        facts = result.get("ansible_facts")
        if isinstance(facts, Mapping) and facts.get(FACT):
            self._path = Path(str(facts[FACT]))

    def _write(self) -> None:
        """Replace the recap file with the current state (atomically: readers never see half)."""
        if self._path is None:
            return
        tmp: str | None = None
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".recap-", suffix=".json", dir=self._path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(self._recap, out, indent=2, default=str)
                out.write("\n")
            os.replace(tmp, self._path)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            # A recap that cannot be written must not stop provisioning; say so once and stop trying.
            self._display.warning(f"conformance_recap: cannot write {self._path}: {exc}; no more recap")
            self._path = None
