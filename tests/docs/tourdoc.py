"""docs/tour.md read as a script: its steps, the clauses each cites, and the commands with their output.

The tour is written for a person, so its format is the one a terminal transcript has (```console
blocks: `$ ` starts a command, the lines after it are what it prints) and the runner reads that, instead
of the tour being generated from a script a reader never sees. The conventions, all in this module:

- a step is a heading carrying an anchor, `## <a id="step-NAME"></a>Title`; its commands are the
  console blocks up to the next step;
- `**Guaranteed by:** ID, ID` in a step names the clauses whose checks stand behind what it shows;
- a command is continued on the next line by a trailing backslash, and a here-document
  (`<<'EOF'` ... `EOF`) runs to its delimiter line, so a reader can paste either as it is;
- ```console cleanup marks the block that undoes the tour: the runner runs it even after a failure;
- `<!-- tour-file: NAME = FILE -->` says that the file NAME the tour just wrote (in its working
  directory) is the one committed as FILE beside the tour, such as the picture `inspect --svg` draws
  (the document shows it as `![...](FILE)`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STEP = re.compile(r'^#{2,4} <a id="(step-[a-z0-9-]+)"></a>\s*(.+?)\s*$')
GUARANTEED = re.compile(r"^\*\*Guaranteed by:\*\*(.*)$")
CLAUSE_ID = re.compile(r"\b[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*-\d{3}\b")
FENCE = re.compile(r"^(```+|~~~+)\s*(.*)$")
HEREDOC = re.compile(r"(?<!<)<<(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
TOUR_FILE = re.compile(r"^<!-- tour-file: (\S+) = (\S+) -->$")


class TourFormatError(ValueError):
    """docs/tour.md breaks one of the conventions above; the message names the line."""


@dataclass(frozen=True, slots=True)
class Command:
    """One `$ ` command of a console block and the output the tour says it prints."""

    line: int  # 1-based line of the `$ ` in the document
    text: str  # the shell text, continuation lines and here-documents included
    expected: str  # the output lines, joined with newlines (no trailing newline)
    output_lines: tuple[int, int]  # [start, end) 0-based line indexes of that output, for --update
    step: str
    cleanup: bool = False


@dataclass(frozen=True, slots=True)
class TourFile:
    """A file the tour writes that is also committed under docs/ (checked like a command's output)."""

    line: int
    name: str  # relative to the tour's working directory at that point
    committed: str  # relative to the tour document's directory
    step: str


@dataclass(frozen=True, slots=True)
class Step:
    """One step: its anchor (the link target), its heading and the clauses it cites."""

    anchor: str
    title: str
    line: int
    clauses: tuple[str, ...]


@dataclass(slots=True)
class TourDoc:
    """The parsed document; `items` keeps commands and tour files in the order they appear."""

    path: Path
    lines: list[str]
    steps: list[Step] = field(default_factory=list)
    items: list[Command | TourFile] = field(default_factory=list)

    @property
    def commands(self) -> list[Command]:
        """Every command, in document order."""
        return [i for i in self.items if isinstance(i, Command)]

    def step(self, anchor: str) -> Step:
        """The step with this anchor."""
        return next(s for s in self.steps if s.anchor == anchor)


def _fail(path: Path, index: int, problem: str) -> TourFormatError:
    return TourFormatError(f"{path}:{index + 1}: {problem}")


def _command_end(path: Path, lines: list[str], start: int, end: int) -> int:
    """The index after the last line of the command starting at `start` (continuations, here-documents)."""
    index = start
    pending: list[tuple[bool, str]] = []  # here-documents opened and not yet closed: (strip tabs, word)
    while True:
        line = lines[index]
        if not pending:
            pending = [(dash == "-", word) for dash, _, word in HEREDOC.findall(line)]
        index += 1
        while pending:
            if index >= end:
                raise _fail(path, start, f"here-document {pending[0][1]} is not closed inside its block")
            strip, word = pending[0]
            if (lines[index].lstrip("\t") if strip else lines[index]) == word:
                pending.pop(0)
            index += 1
        if not line.endswith("\\"):
            return index
        if index >= end:
            raise _fail(path, start, "a command ends in a backslash at the end of its block")


def _console_block(doc: TourDoc, start: int, end: int, step: str, cleanup: bool) -> None:
    """The commands of lines[start:end] (inside the fences)."""
    lines = doc.lines
    index = start
    if index < end and not lines[index].startswith("$ "):
        raise _fail(doc.path, index, "a console block must start with a `$ ` command")
    while index < end:
        first = index
        after = _command_end(doc.path, lines, index, end)
        text = "\n".join([lines[first][2:], *lines[first + 1:after]])
        output_end = after
        while output_end < end and not lines[output_end].startswith("$ "):
            output_end += 1
        doc.items.append(Command(first + 1, text, "\n".join(lines[after:output_end]), (after, output_end),
                                 step, cleanup))
        index = output_end


def parse_tour(path: Path, text: str | None = None) -> TourDoc:
    """Read the tour; a broken convention is a TourFormatError naming the line."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    doc = TourDoc(path, lines)
    current: tuple[str, str, int] | None = None
    cited: list[str] | None = None

    def close_step() -> None:
        if current is not None:
            doc.steps.append(Step(current[0], current[1], current[2], tuple(cited or ())))

    index = 0
    while index < len(lines):
        line = lines[index]
        if heading := STEP.match(line):
            close_step()
            if any(s.anchor == heading[1] for s in doc.steps):
                raise _fail(path, index, f"step anchor {heading[1]} is used twice")
            current, cited = (heading[1], heading[2], index + 1), None
        elif guaranteed := GUARANTEED.match(line):
            if current is None:
                raise _fail(path, index, "**Guaranteed by:** outside a step")
            if cited is not None:
                raise _fail(path, index, f"step {current[0]} has a second **Guaranteed by:** line")
            text = guaranteed[1]
            while index + 1 < len(lines) and lines[index + 1].strip() and not lines[index + 1].startswith(
                    ("#", "```", "~~~", "<!--")):  # the paragraph goes on: Markdown wraps it
                index += 1
                text += " " + lines[index]
            cited = CLAUSE_ID.findall(text)
            if not cited:
                raise _fail(path, index, "**Guaranteed by:** names no clause ID")
        elif tour_file := TOUR_FILE.match(line):
            if current is None:
                raise _fail(path, index, "a tour-file comment outside a step")
            doc.items.append(TourFile(index + 1, tour_file[1], tour_file[2], current[0]))
        elif fence := FENCE.match(line):
            closing = next((i for i in range(index + 1, len(lines)) if lines[i].startswith(fence[1])), None)
            if closing is None:
                raise _fail(path, index, "a code block is not closed")
            info = fence[2].split()
            if info[:1] == ["console"]:
                if current is None:
                    raise _fail(path, index, "a console block outside a step: every command belongs to one")
                _console_block(doc, index + 1, closing, current[0], "cleanup" in info[1:])
            index = closing
        index += 1
    close_step()
    return doc


def index_of(doc: TourDoc) -> dict[str, Any]:
    """What conformance/tour_index.json holds: each step's anchor, title and cited clauses, in order."""
    return {
        "document": "docs/tour.md",
        "generated_by": "python -m tests.docs.runtour --write-index",
        "steps": [{"anchor": s.anchor, "title": s.title, "clauses": list(s.clauses)} for s in doc.steps],
    }
