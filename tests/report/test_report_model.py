"""results.json: the schema accepts what the plugin writes and names the path of what it rejects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from conformance.report.errors import ReportError
from conformance.report.model import ColumnKey, Results, dump, load, summarize
from conformance.report.validate import results_schema, validate
from conformance.verdicts import Level, Verdict, counts_against


def write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(results_schema())


def test_schema_accepts_the_sample(sample_doc: dict[str, Any]) -> None:
    validate(sample_doc, "sample")


@pytest.mark.parametrize(
    ("mutate", "path", "words"),
    [
        (lambda d: d["run"].pop("id"), "$.run.id", "'id' is a required property"),
        (lambda d: d["results"][3].update(verdict="maybe"), "$.results[3].verdict", "'maybe'"),
        (lambda d: d["clauses"]["NS-PID-001"].update(level="MUST NOT"), "$.clauses['NS-PID-001'].level", "MUST NOT"),
        (lambda d: d["results"][0].update(level="should"), "$.results[0].level", "should"),
        (lambda d: d["hosts"][0].update(colour="red"), "$.hosts[0]", "colour"),
        (lambda d: d.update(schema_version=2), "$.schema_version", "1"),
        (lambda d: d["results"][0].update(clause=None), "$.results[0].clause", "None is not of type 'string'"),
        (lambda d: d["results"][0].update(clause="NOPE-001"), "$.results[0].clause", "not in $.clauses"),
        (lambda d: d["results"][0].update(host="nowhere"), "$.results[0].host", "not in $.hosts"),
        (lambda d: d["run"].update(started="yesterday"), "$.run.started", "yesterday"),
        (lambda d: d["summary"]["by_verdict"].pop("xfail"), "$.summary.by_verdict.xfail", "required"),
        (lambda d: d["clauses"]["NS-PID-001"].update(id="NS-PID-002"), "$.clauses['NS-PID-001'].id", "differs"),
    ],
)
def test_schema_rejects_broken_documents_naming_file_and_path(
    tmp_path: Path, sample_doc: dict[str, Any], mutate: Any, path: str, words: str
) -> None:
    mutate(sample_doc)
    file = write(tmp_path, sample_doc)
    with pytest.raises(ReportError) as caught:
        load(file)
    message = str(caught.value)
    assert message.startswith(f"{file}: {path}:"), message
    assert words in message


def test_load_names_the_file_when_it_is_not_json(tmp_path: Path) -> None:
    file = tmp_path / "results.json"
    file.write_text("{not json", encoding="utf-8")
    with pytest.raises(ReportError, match=r"results\.json: not JSON: line 1"):
        load(file)


def test_round_trip_dict_and_file(tmp_path: Path, sample_doc: dict[str, Any], sample: Results) -> None:
    assert sample.to_dict() == sample_doc
    assert Results.from_dict(sample.to_dict()) == sample
    path = tmp_path / "out" / "results.json"
    dump(sample, path)
    assert load(path) == sample
    assert json.loads(path.read_text(encoding="utf-8")) == sample_doc


def test_dump_validates_before_writing(tmp_path: Path, sample_doc: dict[str, Any]) -> None:
    sample_doc["results"][0]["clause"] = "NOPE-001"
    path = tmp_path / "results.json"
    with pytest.raises(ReportError, match=r"\$\.results\[0\]\.clause"):
        dump(Results.from_dict(sample_doc), path)
    assert not path.exists()


def test_summary_counts_and_conformance(sample: Results) -> None:
    s = summarize(sample)
    assert s.total == len(sample.results) == 31
    assert s.by_verdict[Verdict.FAIL] == 2
    assert s.by_verdict[Verdict.UNREACHABLE] == 1
    assert s.by_level[Level.MAY][Verdict.SKIP] == 3
    assert sum(sum(c.values()) for c in s.by_level.values()) == s.total - 1  # the host record has no level
    assert not s.conformant


def test_conformant_when_nothing_is_bad(sample: Results) -> None:
    good = [r for r in sample.results if not counts_against(r.verdict, r.fault is not None)]
    hosts = tuple(h for h in sample.hosts if h.reachable)
    clean = Results(sample.run, sample.clauses, hosts, tuple(good))
    assert summarize(clean).conformant


def test_summary_level_filters_what_decides_conformance(sample: Results) -> None:
    """At MUST, a SHOULD-level error does not count; at SHOULD it does."""
    only_should = tuple(r for r in sample.results if r.level is Level.SHOULD)
    hosts = tuple(h for h in sample.hosts if h.reachable)
    partial = Results(sample.run, sample.clauses, hosts, only_should)
    assert summarize(partial, Level.MUST).conformant
    assert not summarize(partial, Level.SHOULD).conformant


def test_columns_and_labels(sample: Results) -> None:
    labels = [c.label for c in sample.columns()]
    # every clause's faulty variant of an implementation shares one matrix column
    assert labels == ["local-kernel", "local-kernel+fault", "local-ref", "remote-kernel", "remote-ref", "ghost"]
    assert ColumnKey("h", "kernel", None).label == "h-kernel"
