"""The ref driver's faulty variants, the probe's clause -> behaviour table and the layers catalogue agree."""

from __future__ import annotations

from conformance.clauses import load_catalogue
from conformance.drivers.ref import FAULTS
from conformance.probe.layer_checks import FAULT_BEHAVIOURS


def test_every_layers_clause_has_a_described_fault_and_a_behaviour() -> None:
    clauses = sorted(c.id for c in load_catalogue().select(("layers",)))
    assert sorted(FAULTS) == clauses
    assert sorted(FAULT_BEHAVIOURS) == clauses


def test_ref_fault_points_are_named_by_behaviour_not_clause() -> None:
    for clause_id, behaviour in FAULT_BEHAVIOURS.items():
        assert not behaviour.startswith(("LAYER-", "OCI-")), clause_id
        assert f"({behaviour})" in FAULTS[clause_id], clause_id
