"""The two small vocabularies every part shares: clause levels and verdicts.

Kept in one module with no imports from the package, so that report/ can use it without
pulling in drivers, probes or the reference implementations.
"""

from __future__ import annotations

import enum


class Level(enum.StrEnum):
    """RFC 2119 requirement levels, strongest first."""

    MUST = "MUST"
    SHOULD = "SHOULD"
    MAY = "MAY"

    @property
    def rank(self) -> int:
        """0 for MUST, 1 for SHOULD, 2 for MAY: a lower rank is a stronger requirement."""
        return list(Level).index(self)

    def within(self, threshold: Level) -> bool:
        """Whether a clause at this level counts at the selected compliance level."""
        return self.rank <= threshold.rank


class Verdict(enum.StrEnum):
    """What one check of one clause on one (host, implementation) came to."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"  # failed, but the clause is below the selected compliance level
    SKIP = "skip"  # not applicable here, always with a reason
    XFAIL = "xfail"  # a recorded known deviation that still deviates
    ERROR = "error"  # the harness could not decide (probe crashed, bad setup)
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"

    @property
    def is_bad(self) -> bool:
        """Verdicts that make a run non-conformant or incomplete."""
        return self in {Verdict.FAIL, Verdict.ERROR, Verdict.TIMEOUT, Verdict.UNREACHABLE}


def counts_against(verdict: Verdict, faulty: bool) -> bool:
    """Whether one result makes a run non-conformant (or undecided).

    A deliberately faulty variant (``--faults``, the suite's teeth) is expected to fail: it counts
    against the run when it passes, because then its clause's test has no teeth, or when the harness
    could not decide; never because it failed.
    """
    if faulty:
        return verdict in {Verdict.PASS, Verdict.ERROR, Verdict.TIMEOUT, Verdict.UNREACHABLE}
    return verdict.is_bad


#: Exit codes of `conformance run`, documented in README.md.
EXIT_CONFORMANT = 0
EXIT_NOT_CONFORMANT = 1
EXIT_USAGE_OR_HARNESS = 2
EXIT_UNREACHABLE = 3
