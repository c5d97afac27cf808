"""The one exception report/ raises for bad input, so callers can catch it apart from bugs."""

from __future__ import annotations


class ReportError(ValueError):
    """A results file or a Results value is malformed.

    The message names the file (or what the data came from) and the JSON path of the problem, e.g.
    ``reports/x/results.json: $.results[3].verdict: 'maybe' is not one of [...]``, so that a person can
    open the file and find the spot without a debugger.
    """
