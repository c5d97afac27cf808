"""The tour's runner has teeth: wrong output, a failing command or a hung one fails it, and it cleans up.

These run small made-up tours in a temporary directory; they need bash, not root.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.docs.normalise import RULES, Matcher, skeleton
from tests.docs.runtour import TourRun, run_tour, update_tour
from tests.docs.tourdoc import TourFormatError, parse_tour

HEADER = '## <a id="step-one"></a>One\n\n**Guaranteed by:** OVL-WHITEOUT-001,\nOVL-COPYUP-001\n\n'
FENCE = "```"


def _tour(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "tour.md"
    path.write_text(header + body, encoding="utf-8")
    return path


def _run(tmp_path: Path, body: str, *, timeout: float = 30.0, keep_going: bool = False) -> tuple[Path, TourRun]:
    path = _tour(tmp_path, body)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    run = run_tour(parse_tour(path), cwd=tmp_path, scratch_parent=tmp_path, env=env, timeout=timeout,
                   keep_going=keep_going)
    return path, run


def _block(*lines: str, info: str = "console") -> str:
    return "\n".join([FENCE + info, *lines, FENCE, ""])


def test_a_tour_whose_output_matches_passes_and_keeps_the_shells_state(tmp_path: Path) -> None:
    """cd, variables, here-documents and continued lines carry over between commands and blocks."""
    body = "\n".join([
        _block('$ greeting=hello && cd "$(mktemp -d "$TMPDIR/conformance-tour-XXXXXX")"',
               "$ cat > note <<'EOF'",
               "$greeting stays literal",
               "EOF",
               '$ echo "$greeting from" \\',
               '  "$(basename "$(dirname "$PWD")")"',
               f"hello from {tmp_path.name}"),
        "Prose between blocks; the shell is the same one.",
        "",
        _block('$ cat note; echo "size 1.5 KiB"',
               "$greeting stays literal",
               "size   9.9 MiB"),
    ])
    _, run = _run(tmp_path, body)
    assert run.ok, run.report()
    assert not list(tmp_path.glob("conformance-tour-*")), "the runner removes the tour's directory"


def test_a_wrong_output_fails_and_names_the_line_and_the_difference(tmp_path: Path) -> None:
    """The deliberately wrong snippet: the tour claims `goodbye`, the command prints `hello`."""
    path, run = _run(tmp_path, _block("$ echo hello", "goodbye", "$ echo never reached", "never reached"))
    assert not run.ok
    report = run.report()
    assert f"{path}:7 (step step-one): echo hello" in report
    assert "-goodbye" in report and "+hello" in report
    assert len(run.ran) == 1, "the run stops at the first difference"


def test_a_command_that_fails_fails_the_tour_even_with_the_right_output(tmp_path: Path) -> None:
    _, run = _run(tmp_path, _block("$ echo oops; false", "oops"))
    assert not run.ok and "exit status 1" in run.report()


def test_a_command_that_hangs_is_stopped(tmp_path: Path) -> None:
    started = time.monotonic()
    _, run = _run(tmp_path, _block("$ sleep 60"), timeout=1.0)
    assert not run.ok and "no answer within 1 s" in run.report()
    assert time.monotonic() - started < 30


def test_values_that_vary_compare_by_their_pairing(tmp_path: Path) -> None:
    """A digest the tour shows twice must be one digest twice in the run, whatever its value."""
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    _, run = _run(tmp_path, _block(f"$ echo {a}", b, f"$ echo {a} {a}", f"{b} {b}"))
    assert run.ok, run.report()
    _, run = _run(tmp_path, _block(f"$ echo {a}", b, f"$ echo {c}", b))
    assert not run.ok and "stands for" in run.report()


def test_a_committed_file_is_checked_like_output_and_updated(tmp_path: Path) -> None:
    """`<!-- tour-file: pic.svg = pic.svg -->`: the file the tour wrote must equal the one beside the tour."""
    body = _block('$ cd "$(mktemp -d "$TMPDIR/conformance-tour-XXXXXX")" && echo "<svg>1.9 MiB</svg>" > pic.svg')
    body += "\n<!-- tour-file: pic.svg = pic.svg -->\n"
    path, run = _run(tmp_path, body, keep_going=True)
    assert not run.ok and "pic.svg is missing" in run.report()
    update_tour(parse_tour(path), run)
    assert (tmp_path / "pic.svg").read_text() == "<svg>1.9 MiB</svg>\n"
    (tmp_path / "pic.svg").write_text("<svg>2.0 MiB</svg>\n")  # a size: varies
    assert _run(tmp_path, body)[1].ok
    (tmp_path / "pic.svg").write_text("<svg>a picture of something else</svg>\n")
    _, run = _run(tmp_path, body)
    assert not run.ok and "pic.svg: the output differs" in run.report()


def test_each_rule_matches_its_example_and_only_its_kind() -> None:
    for rule in RULES:
        assert re.search(rule.pattern, rule.example), rule.name
    assert skeleton("net:[4026532249]  pid:[4026531836]\n\n") == ["net:[<ns-inode>] pid:[<ns-inode>]"]
    assert skeleton("588895 bytes, 67108864, 1.9 MiB, sha256:" + "0" * 64) == [
        "588895 bytes, 67108864, <size>, sha256:<digest>"], "plain numbers and byte counts are compared as they are"


def test_a_namespace_shared_in_the_tour_must_be_shared_in_the_run() -> None:
    """The tour shows the container's user namespace equal to the host's: the run must show that too."""
    matcher = Matcher()
    assert matcher.compare("user:[1]", "user:[7]") is None
    assert matcher.compare("user:[1]\nnet:[2]", "user:[7]\nnet:[8]") is None
    problem = matcher.compare("user:[1]", "user:[9]")
    assert problem is not None and "stands for 7 earlier" in problem
    problem = Matcher().compare("net:[1]\nuts:[2]", "net:[5]\nuts:[5]")
    assert problem is not None and "earlier the tour shows 1" in problem


def test_the_cleanup_block_runs_after_a_failure(tmp_path: Path) -> None:
    body = _block('$ cd "$(mktemp -d "$TMPDIR/conformance-tour-XXXXXX")" && touch made', "$ false") + "\n" + _block(
        '$ touch "$TMPDIR/cleaned"', info="console cleanup")
    _, run = _run(tmp_path, body)
    assert not run.ok
    assert (tmp_path / "cleaned").exists()
    assert not list(tmp_path.glob("conformance-tour-*"))


def test_update_writes_what_the_commands_print(tmp_path: Path) -> None:
    path, run = _run(tmp_path, _block("$ printf 'one\\ntwo\\n'", "old", "$ echo three") + "\nAfter.\n",
                     keep_going=True)
    assert update_tour(parse_tour(path), run) == 2
    assert "$ printf 'one\\ntwo\\n'\none\ntwo\n$ echo three\nthree\n```\n\nAfter.\n" in path.read_text()
    _, again = _run(tmp_path, path.read_text().removeprefix(HEADER))
    assert again.ok, again.report()


def test_parser_reads_steps_clauses_and_commands(tmp_path: Path) -> None:
    body = _block("$ a \\", "  b", "out", "$ cat <<-EOF", "\tx", "\tEOF") + "\n" + _block("$ not run", info="text")
    doc = parse_tour(_tour(tmp_path, body))
    [step] = doc.steps
    assert (step.anchor, step.title, step.clauses) == ("step-one", "One", ("OVL-WHITEOUT-001", "OVL-COPYUP-001"))
    assert [(c.text, c.expected) for c in doc.commands] == [("a \\\n  b", "out"), ("cat <<-EOF\n\tx\n\tEOF", "")]


@pytest.mark.parametrize(("body", "problem"), [
    (_block("$ cat <<EOF", "never closed"), "here-document EOF is not closed"),
    (_block("output first"), "must start with a `\\$ ` command"),
    ("```console\n$ echo\n", "a code block is not closed"),
])
def test_parser_refuses_a_broken_block_naming_the_line(tmp_path: Path, body: str, problem: str) -> None:
    with pytest.raises(TourFormatError, match=problem):
        parse_tour(_tour(tmp_path, body))


def test_parser_refuses_a_command_outside_a_step(tmp_path: Path) -> None:
    with pytest.raises(TourFormatError, match=r"tour.md:3: a console block outside a step"):
        parse_tour(_tour(tmp_path, _block("$ echo"), header="# Title\n\n"))
