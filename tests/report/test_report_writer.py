"""write_all and new_run_dir: one directory per run, and a `latest` link that follows the newest."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conformance.report.errors import ReportError
from conformance.report.model import Results, load
from conformance.report.writer import new_run_dir, write_all


def test_write_all_writes_the_four_files(tmp_path: Path, sample: Results) -> None:
    run_dir = tmp_path / "reports" / sample.run.id
    paths = write_all(sample, run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == ["junit.xml", "report.html", "results.json", "summary.md"]
    assert set(paths) == {"results.json", "junit.xml", "report.html", "summary.md"}
    assert load(paths["results.json"]) == sample


def test_write_all_writes_nothing_for_invalid_results(tmp_path: Path, sample_doc: dict[str, object]) -> None:
    sample_doc["results"][0]["host"] = "nowhere"  # type: ignore[index]
    run_dir = tmp_path / "run"
    with pytest.raises(ReportError):
        write_all(Results.from_dict(sample_doc), run_dir)
    assert not run_dir.exists()


def test_new_run_dir_and_latest_link(tmp_path: Path) -> None:
    root = tmp_path / "reports"
    started = datetime(2026, 11, 28, 3, 30, tzinfo=UTC)
    first = new_run_dir(root, started, "ab12cd")
    assert first == root / "20261128T033000Z_ab12cd" and first.is_dir()
    latest = root / "latest"
    assert latest.is_symlink() and os.readlink(latest) == "20261128T033000Z_ab12cd"  # relative
    assert latest.resolve() == first.resolve()

    second = new_run_dir(root, started + timedelta(minutes=5), "ef56ab")
    assert os.readlink(latest) == "20261128T033500Z_ef56ab"
    assert latest.resolve() == second.resolve()
    assert first.is_dir()  # the old run is kept
    assert sorted(p.name for p in root.iterdir()) == ["20261128T033000Z_ab12cd", "20261128T033500Z_ef56ab", "latest"]


def test_new_run_dir_refuses_reuse_and_bad_input(tmp_path: Path) -> None:
    started = datetime(2026, 11, 28, 3, 30, tzinfo=UTC)
    new_run_dir(tmp_path, started, "ab12cd")
    with pytest.raises(FileExistsError):
        new_run_dir(tmp_path, started, "ab12cd")
    with pytest.raises(ValueError, match="naive"):
        new_run_dir(tmp_path, datetime(2026, 11, 28), "x")
    with pytest.raises(ValueError, match="short id"):
        new_run_dir(tmp_path, started, "../evil")


def test_latest_that_is_a_real_directory_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "latest").mkdir()
    with pytest.raises(ReportError, match="not a symlink"):
        new_run_dir(tmp_path, datetime(2026, 11, 28, tzinfo=UTC), "ab12cd")
