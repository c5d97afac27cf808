"""Each namespaces clause's teeth: the reference runtime's faulty behaviour that must break its test.

The runtime (conformance/ref/runtime.py) knows its faults by behaviour (its `faults` keyword), never by
clause; this table maps a clause to one, so `conformance run --faults --impl ref` shows each namespaces
test failing against a runtime that does that one thing wrong. drivers/ref.py lists the same entries.
"""

from __future__ import annotations

#: clause ID -> (behaviour of the faulty runtime, what it does wrong that the clause's test observes).
NS_FAULTS: dict[str, tuple[str, str]] = {}

#: clause ID -> behaviour, as the probe passes it to run_bundle.
FAULT_BEHAVIOURS: dict[str, str] = {clause: behaviour for clause, (behaviour, _what) in NS_FAULTS.items()}
