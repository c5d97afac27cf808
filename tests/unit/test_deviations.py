"""Known deviations: validated, matched by implementation version range, and they expire."""

from __future__ import annotations

import datetime as dt

import pytest

from conformance.deviations import DeviationError, find, load, parse

ENTRY = """
deviations:
  - clause: HOST-CGROUP-007
    implementation: kernel
    versions: ">=6.0,<7"
    justification: Hybrid cgroups on this fleet until the 2027 migration.
    link: https://example.org/1
    expires: 2027-01-31
"""


def test_package_file_is_valid() -> None:
    assert isinstance(load(), list)


def test_matches_by_clause_implementation_and_version() -> None:
    deviations = parse("d.yaml", ENTRY)
    assert find(deviations, "HOST-CGROUP-007", "kernel", "6.18.44") is not None
    assert find(deviations, "HOST-CGROUP-007", "kernel", "7.1") is None
    assert find(deviations, "HOST-CGROUP-007", "runc", "6.1") is None
    assert find(deviations, "HOST-CGROUP-006", "kernel", "6.1") is None
    assert find(deviations, "HOST-CGROUP-007", "kernel", None) is None


def test_expiry() -> None:
    [deviation] = parse("d.yaml", ENTRY)
    assert not deviation.expired(dt.date(2027, 1, 31))
    assert deviation.expired(dt.date(2027, 2, 1))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("    link: https://example.org/1\n", ""), "'link' is a required property"),
        (("expires: 2027-01-31", "expires: soon"), "deviations/0/expires"),
        (('versions: ">=6.0,<7"', "versions: 'about six'"), "is not a version range"),
        (("clause: HOST-CGROUP-007", "clause: whatever"), "deviations/0/clause"),
    ],
)
def test_malformed_entries_name_the_entry(change: tuple[str, str], message: str) -> None:
    with pytest.raises(DeviationError) as info:
        parse("d.yaml", ENTRY.replace(*change))
    assert "d.yaml" in str(info.value) and message in str(info.value)
