"""Parse the Containerfile subset the reference builder knows (Dockerfile reference, docs.docker.com).

The subset: FROM, COPY, ADD, RUN, ENV, WORKDIR, USER, LABEL, CMD and ENTRYPOINT.

Lines are joined as Docker joins them: a trailing backslash continues the instruction on the next line,
and blank or comment lines inside a continuation are skipped. Keywords are case-insensitive. What is
not in the subset is refused with the line number, never skipped: a builder that silently ignored
`RUN` or `VOLUME` would produce an image the Containerfile did not describe.

No variable substitution: a `$` in ENV, LABEL, WORKDIR, USER, COPY or ADD is refused rather than kept
literally, because Docker would expand it and the two images would differ without a word. RUN takes
`$` as it is: the builder never expands RUN, the shell in the container does (Dockerfile reference §
Environment replacement does not list RUN).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from conformance.ref.errors import BuildError

#: Instructions of the Dockerfile reference this builder does not take, with the reason given.
_UNSUPPORTED = {
    "ARG": "ARG is not supported (no variable substitution); write the value in place",
    "EXPOSE": "EXPOSE is not supported by this subset builder; remove it",
    "VOLUME": "VOLUME is not supported by this subset builder; remove it",
    "HEALTHCHECK": "HEALTHCHECK is not supported by this subset builder; remove it",
    "SHELL": "SHELL is not supported by this subset builder (shell forms use /bin/sh -c); remove it",
    "STOPSIGNAL": "STOPSIGNAL is not supported by this subset builder; remove it",
    "ONBUILD": "ONBUILD is not supported by this subset builder; remove it",
    "MAINTAINER": "MAINTAINER is not supported (deprecated); use LABEL maintainer=...",
}

SHELL = ("/bin/sh", "-c")


@dataclass(frozen=True, slots=True)
class Instruction:
    """One instruction: where it starts, and its text as written (continuations joined) for history."""

    line: int
    text: str


@dataclass(frozen=True, slots=True)
class From(Instruction):
    """`FROM scratch`, `FROM oci:<layout>[:ref]`, `FROM oci-archive:<tar>[:ref]`, `FROM docker-archive:<tar>[:tag]`."""

    image: str


@dataclass(frozen=True, slots=True)
class Copy(Instruction):
    """COPY: sources relative to the build context, a destination in the image, optional owner and mode."""

    sources: tuple[str, ...]
    dest: str
    chown: tuple[int, int] | None = None
    chmod: int | None = None


@dataclass(frozen=True, slots=True)
class Add(Copy):
    """ADD: COPY that also extracts a local tar archive into the destination (URLs are refused)."""


@dataclass(frozen=True, slots=True)
class Run(Instruction):
    """RUN: the argv run in a container of the image so far; the shell form is wrapped in `/bin/sh -c`."""

    argv: tuple[str, ...]
    shell: bool


@dataclass(frozen=True, slots=True)
class Env(Instruction):
    """ENV: variables set in the image config, in order."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Label(Instruction):
    """LABEL: labels set in the image config, in order."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Workdir(Instruction):
    """WORKDIR: absolute, or relative to the previous WORKDIR."""

    path: str


@dataclass(frozen=True, slots=True)
class User(Instruction):
    """USER: `user[:group]`, names or numbers, recorded as written."""

    user: str


@dataclass(frozen=True, slots=True)
class Cmd(Instruction):
    """CMD: the argv; the shell form is already wrapped in `/bin/sh -c` (`shell` says it was)."""

    argv: tuple[str, ...]
    shell: bool


@dataclass(frozen=True, slots=True)
class Entrypoint(Instruction):
    """ENTRYPOINT: as CMD."""

    argv: tuple[str, ...]
    shell: bool


def parse(text: str) -> tuple[Instruction, ...]:
    """The instructions of a Containerfile; the first is a From, and it is the only one."""
    instructions = tuple(_instruction(line, logical) for line, logical in logical_lines(text))
    if not instructions:
        raise BuildError("the Containerfile has no instructions; it needs at least FROM")
    if not isinstance(instructions[0], From):
        first = instructions[0]
        raise BuildError("the first instruction must be FROM", line=first.line, instruction=first.text)
    for later in instructions[1:]:
        if isinstance(later, From):
            raise BuildError("multi-stage builds are not supported: use one FROM", line=later.line,
                             instruction=later.text)
    return instructions


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each instruction, continuations joined, comments and blanks dropped."""
    result: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker skips these inside a continuation too
        if not pending:
            start = number
        body = raw.rstrip()
        if body.endswith("\\"):
            pending.append(body[:-1])
            continue
        pending.append(body)
        result.append((start, "".join(pending).strip()))
        pending = []
    if pending:  # a continuation on the last line: Docker takes what is there
        result.append((start, "".join(pending).strip()))
    return result


def _instruction(line: int, text: str) -> Instruction:
    keyword, rest = _split_first(text)
    keyword = keyword.upper()
    if keyword in _UNSUPPORTED:
        raise BuildError(_UNSUPPORTED[keyword], line=line, instruction=text)
    parser = _PARSERS.get(keyword)
    if parser is None:
        raise BuildError(f"unknown instruction {keyword!r}; this builder knows {', '.join(sorted(_PARSERS))}",
                         line=line, instruction=text)
    if not rest:
        raise BuildError(f"{keyword} needs arguments", line=line, instruction=text)
    return parser(line, text, rest)


def _split_first(text: str) -> tuple[str, str]:
    """The first word and the rest, split at the first run of whitespace (spaces or tabs)."""
    parts = text.split(None, 1)
    return (parts[0], parts[1].strip()) if len(parts) == 2 else (parts[0] if parts else "", "")


def _fail(line: int, text: str, reason: str) -> BuildError:
    return BuildError(reason, line=line, instruction=text)


def _no_variables(line: int, text: str, rest: str) -> None:
    if "$" in rest:
        raise _fail(line, text, "variable substitution ($) is not supported by this builder; write the value out")


def _words(line: int, text: str, rest: str) -> list[str]:
    try:
        return shlex.split(rest, posix=True)
    except ValueError as err:
        raise _fail(line, text, f"cannot split the arguments ({err}); check the quotes") from None


def _from(line: int, text: str, rest: str) -> Instruction:
    words = rest.split()
    if words[0].startswith("--"):
        raise _fail(line, text, f"FROM option {words[0]!r} is not supported; remove it")
    if len(words) == 3 and words[1].upper() == "AS":
        raise _fail(line, text, "multi-stage builds (FROM ... AS name) are not supported; remove 'AS name'")
    if len(words) != 1:
        raise _fail(line, text, "FROM takes one image: scratch, oci:<layout>[:ref], oci-archive:<tar>[:ref] "
                                "or docker-archive:<tar>[:tag]")
    return From(line, text, words[0])


def _copy(line: int, text: str, rest: str) -> Instruction:
    keyword = _split_first(text)[0].upper()
    _no_variables(line, text, rest)
    chown: tuple[int, int] | None = None
    chmod: int | None = None
    while rest.startswith("--"):
        flag, rest = _split_first(rest)
        name, _, value = flag.partition("=")
        if name == "--chown" and value:
            chown = _owner(line, text, value)
        elif name == "--chmod" and value:
            try:
                chmod = int(value, 8)
            except ValueError:
                raise _fail(line, text, f"--chmod={value}: an octal mode such as 644 is needed") from None
            if not 0 <= chmod <= 0o7777:
                raise _fail(line, text, f"--chmod={value}: the mode is out of range (0 to 7777)")
        elif name == "--from":
            raise _fail(line, text, "--from needs multi-stage builds, which are not supported; copy from the context")
        else:
            raise _fail(line, text, f"{keyword} option {flag!r} is not supported (only --chown=uid:gid, --chmod=mode)")
    paths = _json_list(rest) if rest.startswith("[") else None
    if paths is None:
        paths = _words(line, text, rest)
    if len(paths) < 2:
        raise _fail(line, text, f"{keyword} needs at least one source and a destination")
    cls = Add if keyword == "ADD" else Copy
    return cls(line, text, tuple(paths[:-1]), paths[-1], chown, chmod)


def _owner(line: int, text: str, value: str) -> tuple[int, int]:
    user, _, group = value.partition(":")
    try:
        uid = int(user)
        gid = int(group) if group else uid
    except ValueError:
        raise _fail(line, text, f"--chown={value}: only numeric uid:gid is supported (names need the image's "
                                "/etc/passwd); write the numbers") from None
    if uid < 0 or gid < 0:
        raise _fail(line, text, f"--chown={value}: ids cannot be negative")
    return uid, gid


def _pairs(line: int, text: str, rest: str, keyword: str) -> tuple[tuple[str, str], ...]:
    _no_variables(line, text, rest)
    words = _words(line, text, rest)
    if "=" not in words[0]:  # the legacy form: `ENV key value with spaces`, the rest of the line is the value
        key, value = _split_first(rest)
        if not value.strip():
            raise _fail(line, text, f"{keyword} {key} needs a value (or write {key}=)")
        return ((key, value.strip()),)
    pairs = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise _fail(line, text, f"{keyword}: {word!r} is not key=value; quote values with spaces")
        pairs.append((key, value))
    return tuple(pairs)


def _env(line: int, text: str, rest: str) -> Instruction:
    return Env(line, text, _pairs(line, text, rest, "ENV"))


def _label(line: int, text: str, rest: str) -> Instruction:
    return Label(line, text, _pairs(line, text, rest, "LABEL"))


def _workdir(line: int, text: str, rest: str) -> Instruction:
    _no_variables(line, text, rest)
    return Workdir(line, text, rest)


def _user(line: int, text: str, rest: str) -> Instruction:
    _no_variables(line, text, rest)
    if len(rest.split()) != 1:
        raise _fail(line, text, "USER takes one word: user[:group]")
    return User(line, text, rest)


def _json_list(rest: str) -> list[str] | None:
    """The exec form, or None when `rest` is not a JSON list of strings (Docker then takes the shell form)."""
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def _command(rest: str) -> tuple[tuple[str, ...], bool]:
    argv = _json_list(rest) if rest.startswith("[") else None
    if argv is None:
        return (*SHELL, rest), True
    return tuple(argv), False


def _run(line: int, text: str, rest: str) -> Instruction:
    if rest.startswith("--"):  # --mount, --network, --security: BuildKit's, refused by the classic builder too
        raise _fail(line, text, f"RUN option {_split_first(rest)[0]!r} is not supported; remove it")
    argv, shell = _command(rest)
    if not argv or not argv[0]:
        raise _fail(line, text, "RUN needs a command (the exec form's list is empty)")
    return Run(line, text, argv, shell)


def _cmd(line: int, text: str, rest: str) -> Instruction:
    argv, shell = _command(rest)
    return Cmd(line, text, argv, shell)


def _entrypoint(line: int, text: str, rest: str) -> Instruction:
    argv, shell = _command(rest)
    return Entrypoint(line, text, argv, shell)


_PARSERS = {"FROM": _from, "COPY": _copy, "ADD": _copy, "RUN": _run, "ENV": _env, "LABEL": _label, "WORKDIR": _workdir,
            "USER": _user, "CMD": _cmd, "ENTRYPOINT": _entrypoint}
