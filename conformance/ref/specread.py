"""Reading config.json by type: each getter names the field in the ConfigError it raises.

runtime-spec config.md gives every property a JSON type; a value of another type is a malformed config,
and the error says where (`process.user.uid`, `mounts[2].options[0]`) and what was found instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from conformance.ref.errors import RefError


class ConfigError(RefError):
    """config.json is malformed or asks for what the runtime cannot do; names the field and what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"config.json {field}: {problem}" if field else problem)


def lookup(doc: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path (`process.user.uid`), None where any part is missing."""
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def obj(value: object, where: str) -> dict[str, Any]:
    """An object (dict)."""
    if not isinstance(value, dict):
        raise ConfigError(where, f"expected an object, got {_shown(value)}")
    return value


def array(value: object, where: str) -> list[Any]:
    """An array (list)."""
    if not isinstance(value, list):
        raise ConfigError(where, f"expected an array, got {_shown(value)}")
    return value


def string(value: object, where: str) -> str:
    """A string."""
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {_shown(value)}")
    return value


def opt_string(value: object, where: str) -> str | None:
    """A string or None."""
    return None if value is None else string(value, where)


def strings(value: object, where: str) -> tuple[str, ...]:
    """An array of strings, as a tuple."""
    items = array(value, where)
    for n, item in enumerate(items):
        string(item, f"{where}[{n}]")
    return tuple(items)


def integer(value: object, where: str, minimum: int | None = 0) -> int:
    """An integer (not a bool), at least `minimum` unless that is None."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(where, f"expected an integer, got {_shown(value)}")
    if minimum is not None and value < minimum:
        raise ConfigError(where, f"{value} is below {minimum}")
    return value


def boolean(value: object, where: str) -> bool:
    """True or false."""
    if not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {_shown(value)}")
    return value


def absolute(value: object, where: str) -> str:
    """An absolute path, normalised."""
    path = string(value, where)
    if not path.startswith("/"):
        raise ConfigError(where, f"{path!r} is not an absolute path (the spec requires one)")
    return os.path.normpath(path)


def _shown(value: object) -> str:
    return "nothing (the field is required)" if value is None else f"{type(value).__name__} {value!r}"[:80]
