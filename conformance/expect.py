"""How a test says a clause is not met: an assertion that carries the clause, what, expected, actual.

Messages read like `HOST-OVERLAY-004 upper/gone: expected a whiteout (char 0/0), got a regular file`,
and the report keeps expected and actual apart so a reader sees both without parsing text.
"""

from __future__ import annotations

from typing import Any


class NonConformance(AssertionError):
    """A clause is not met on this host by this implementation."""

    def __init__(self, clause: str, what: str, expected: Any, actual: Any, hint: str = "") -> None:
        self.clause = clause
        self.what = what
        self.expected = expected
        self.actual = actual
        self.hint = hint
        text = f"{clause} {what}: expected {expected}, got {actual}"
        super().__init__(f"{text} ({hint})" if hint else text)


def expect(clause: str, what: str, expected: Any, actual: Any, hint: str = "") -> None:
    """Raise NonConformance unless actual equals expected."""
    __tracebackhide__ = True
    if expected != actual:
        raise NonConformance(clause, what, expected, actual, hint)


def expect_that(clause: str, what: str, holds: bool, expected: str, actual: Any, hint: str = "") -> None:
    """Raise NonConformance unless a condition holds; expected is said in words."""
    __tracebackhide__ = True
    if not holds:
        raise NonConformance(clause, what, expected, actual, hint)
