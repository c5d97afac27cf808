"""Which tests check which clause, read from the suite's source without importing or collecting it.

`conformance explain` and the project's catalogue tests use this: reading the decorators is instant
and needs no host, where a pytest collection would resolve hosts and gather facts.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SUITE_DIR = Path(__file__).resolve().parent / "suite"


def _clause_ids(func: ast.FunctionDef) -> list[str]:
    found = []
    for deco in func.decorator_list:
        if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and deco.func.attr == "clause"
                and deco.args and isinstance(deco.args[0], ast.Constant) and isinstance(deco.args[0].value, str)):
            found.append(deco.args[0].value)
    return found


def tests_by_clause(suite_dir: Path = SUITE_DIR) -> dict[str, list[str]]:
    """Clause ID -> test ids like host/test_overlay.py::test_overlay_is_listed_in_proc_filesystems."""
    index: dict[str, list[str]] = defaultdict(list)
    for path in sorted(suite_dir.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                for clause_id in _clause_ids(node):
                    index[clause_id].append(f"{path.relative_to(suite_dir).as_posix()}::{node.name}")
    return dict(index)


def docstrings(suite_dir: Path = SUITE_DIR) -> dict[str, str]:
    """Test id -> the test's docstring (the scenario in one line)."""
    found: dict[str, str] = {}
    for path in sorted(suite_dir.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                found[f"{path.relative_to(suite_dir).as_posix()}::{node.name}"] = ast.get_docstring(node) or ""
    return found
