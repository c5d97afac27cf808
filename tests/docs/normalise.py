"""What may differ between the output docs/tour.md shows and what the same command prints on another run.

Only values that cannot be the same on every machine are normalised, and none is skipped: each rule
below names a kind of value, and a value of that kind compares equal to another only if the pairing is
kept through the whole tour, both ways. So if the tour shows one digest twice (a build and its rebuild,
a layer and the directory named after it), the run must print one digest twice there too, and two
different namespace inodes in the tour must be two different inodes in the run. Everything else is
compared as text, except that a run of blanks compares equal to one blank: tables pad their columns to
the width of the values, and those widths move with the values.

The table is written once, here; docs/tour.md shows it (`rules_table()`, checked by the tour's test).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Rule:
    """One kind of value that varies between runs, and why it does."""

    name: str
    pattern: str
    why: str
    example: str


RULES: tuple[Rule, ...] = (
    Rule("scratch", r"/dev/shm/conformance-tour-[A-Za-z0-9]{6}",
         "the tour's working directory, made by `mktemp`", "/dev/shm/conformance-tour-Q4MBlg"),
    Rule("digest", r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])",
         "sha256 digests and 64-hex ids: a layer with the host's busybox, and every digest above it, differs "
         "with the busybox-static package; docker names its layer directories at random",
         "ef4d64a2a16d6cfcde7b3dcdeaa0de796ca729ab75f00a5173d92d0b88eed5e0"),
    Rule("short-id", r"(?<![0-9a-f])[0-9a-f]{12}(?![0-9a-f])",
         "the same digests cut to 12 hex digits, and the reference runtime's random container ids",
         "ef4d64a2a16d"),
    Rule("ns-inode", r"(?<=:\[)[0-9]+(?=\])", "namespace inode numbers, given out by the kernel at boot and "
         "as namespaces are made", "net:[4026532249]"),
    Rule("size", r"\b[0-9]+(?:\.[0-9]+)? (?:B|KiB|MiB|GiB)\b",
         "sizes that include the host's busybox binary (and sizes in general, so a new busybox moves no line)",
         "1.9 MiB"),
)
_SCANNER = re.compile("|".join(f"(?P<r{i}>{rule.pattern})" for i, rule in enumerate(RULES)))
_BLANKS = re.compile(r"[ \t]+")


def rules_table() -> str:
    """The rules as the Markdown table at the top of docs/tour.md."""
    rows = ["| value | why it varies | pattern | example |", "|---|---|---|---|"]
    # A `|` inside a table cell, even in code, must be escaped (GitHub Flavored Markdown, tables).
    rows += [f"| {r.name} | {r.why} | `{r.pattern.replace('|', chr(92) + '|')}` | `{r.example}` |" for r in RULES]
    return "\n".join(rows)


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    """(rule name, value) for each variable value in text, in order."""
    for match in _SCANNER.finditer(text):
        group = match.lastgroup or ""
        yield RULES[int(group[1:])].name, match.group()


def skeleton(text: str) -> list[str]:
    """The text with each variable value replaced by its rule's name, blanks squeezed, no trailing blank lines."""
    marked = _SCANNER.sub(lambda m: f"<{RULES[int((m.lastgroup or 'r0')[1:])].name}>", text)
    lines = [_BLANKS.sub(" ", line).rstrip() for line in marked.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


@dataclass(slots=True)
class Matcher:
    """Compares outputs in tour order, keeping the pairing of the tour's values with the run's values."""

    tour_to_run: dict[tuple[str, str], str] = field(default_factory=dict)
    run_to_tour: dict[tuple[str, str], str] = field(default_factory=dict)

    def compare(self, expected: str, actual: str) -> str | None:
        """None when they match; else what differs, as a diff or as the value whose pairing broke.

        The pairings of a command are kept only when the whole command matches, so one wrong command
        does not make the later ones fail too.
        """
        want, got = skeleton(expected), skeleton(actual)
        if want != got:
            diff = difflib.unified_diff(expected.rstrip("\n").split("\n"), actual.rstrip("\n").split("\n"),
                                        "the tour shows", "the run printed", lineterm="", n=2)
            return "the output differs (after normalisation):\n" + "\n".join(diff)
        forward, backward = dict(self.tour_to_run), dict(self.run_to_tour)
        for (kind, shown), (_, printed) in zip(_tokens(expected), _tokens(actual), strict=True):
            if forward.setdefault((kind, shown), printed) != printed:
                return (f"{kind} {shown} stands for {forward[(kind, shown)]} earlier in this run, "
                        f"but here the run printed {printed}")
            if backward.setdefault((kind, printed), shown) != shown:
                return (f"the run printed {kind} {printed} where the tour shows {shown}, but earlier the "
                        f"tour shows {backward[(kind, printed)]} for it")
        self.tour_to_run, self.run_to_tour = forward, backward
        return None
