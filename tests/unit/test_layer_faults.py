"""The ref driver's faulty variants, the probe's clause -> behaviour tables and the catalogue agree, area by area."""

from __future__ import annotations

import pytest

from conformance.clauses import load_catalogue
from conformance.drivers.ref import FAULTS
from conformance.probe import cg_faults, layer_checks, ns_faults, overlay_checks

#: The areas the reference implementations answer, each with the probe's clause -> behaviour table.
TABLES = {"layers": layer_checks.FAULT_BEHAVIOURS, "overlay": overlay_checks.FAULT_BEHAVIOURS,
          "namespaces": ns_faults.FAULT_BEHAVIOURS, "cgroups": cg_faults.CG_BEHAVIOURS}


@pytest.mark.parametrize("area", sorted(TABLES))
def test_every_ref_clause_has_a_described_fault_and_a_behaviour(area: str) -> None:
    clauses = sorted(c.id for c in load_catalogue().select((area,)))
    assert sorted(TABLES[area]) == clauses
    assert sorted(c for c in FAULTS if c in clauses) == clauses


def test_the_driver_describes_no_other_fault() -> None:
    assert sorted(FAULTS) == sorted(c for table in TABLES.values() for c in table)


@pytest.mark.parametrize("area", sorted(TABLES))
def test_ref_fault_points_are_named_by_behaviour_not_clause(area: str) -> None:
    for clause_id, behaviour in TABLES[area].items():
        assert not behaviour.startswith(("LAYER-", "OCI-", "OVL-", "NS-", "CG-")), clause_id
        assert f"({behaviour})" in FAULTS[clause_id], clause_id
