"""The hostile layer corpus as plain data (research/overlay_layers.md § 3, H-numbers).

One corpus serves both the reference implementation's own tests (tests/ref/test_ref_hostile.py, which
check its exact error wording) and the suite (conformance/suite/layers/test_hostile.py, which runs every
case against every applier). A case is a list of layers, base first; each layer is either a list of tar
entries (the dicts of conformance.scenarios.layers, plus `chardev`) or a named byte recipe that the
probe (conformance/probe/hostile_checks.py) builds, for inputs that no entry list can describe
(truncated, corrupt or bomb-shaped bytes).

`{sentinel}` in a name, a link target or an expected path stands for the absolute path of the sentinel
dir that the probe keeps beside the rootfs, so a broken applier hits the sentinel (and is caught)
rather than the host's /etc. Written after a name (`a{sentinel}/victim`) it gives the sentinel's path
below that name, since the sentinel's path starts with a slash. Relative climbs name it
`../sentinel`: the sentinel sits next to the reference's rootfs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from conformance.ref.oci import LAYER_GZIP, LAYER_TAR
from conformance.scenarios import Scenario
from conformance.scenarios.layers import Entry, directory, file, hardlink, symlink

#: A layer: tar entries, in order, or {"recipe": name} for bytes the probe builds by name.
Layer = list[Entry] | dict[str, str]

SAFE = "LAYER-SAFE-002"  # refused or contained: every case
WHOLE = "LAYER-SAFE-003"  # refused when it cannot be read whole: truncation, corruption, limits
#: Hazards of layers that cannot be read whole (H-20) or pass a limit (H-21): these must be refused.
WHOLE_HAZARDS = frozenset({"H-20", "H-21"})


def chardev(name: str, major: int = 1, minor: int = 3) -> Entry:
    """A character device entry (the probe's own entry kind; layers.apply has none)."""
    return {"name": name, "type": "chardev", "major": major, "minor": minor, "mode": 0o666}


def marker(name: str) -> Entry:
    """An empty regular file under exactly this name (a whiteout, well-formed or not, given in full)."""
    return file(name, mode=0o600)


def recipe(name: str) -> dict[str, str]:
    """A layer whose bytes the probe builds by name (see hostile_checks.RECIPES)."""
    return {"recipe": name}


@dataclass(frozen=True, slots=True)
class HostileCase:
    """One hostile input and what the reference does with it.

    `expect` is the reference's answer: "refused" (its error contains `words` and names `entry`) or
    "contained" (applied, and `path` exists inside the rootfs). Other implementations may refuse or
    contain any case except those of WHOLE_HAZARDS, which every applier must refuse. `options` are
    ApplyOptions knobs (limits, devices policy) only the reference has: such a case is ref-only.
    """

    id: str
    hazard: str
    layers: Sequence[Layer]
    expect: Literal["refused", "contained"]
    words: str | None = None
    entry: str | None = None
    path: str | None = None
    media_type: str = LAYER_TAR
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def must_refuse(self) -> bool:
        """Every applier must refuse it (not just the reference): it cannot be read whole."""
        return self.hazard in WHOLE_HAZARDS

    @property
    def ref_only(self) -> bool:
        """Its point is a knob of the reference (a limit, the devices policy) that tools do not have."""
        return bool(self.options)

    @property
    def clauses(self) -> tuple[str, ...]:
        """The clauses this case checks."""
        return (SAFE, WHOLE) if self.must_refuse else (SAFE,)

    def scenario(self) -> Scenario:
        """The probe's scenario: apply the layers beside a sentinel and say what happened."""
        return Scenario("hostile.apply", {
            "case": self.id, "hazard": self.hazard, "layers": [_copy(layer) for layer in self.layers],
            "media_type": self.media_type, "options": dict(self.options), "ref_only": self.ref_only,
            "must_refuse": self.must_refuse, "path": self.path,
        })


def _copy(layer: Layer) -> Layer:
    return [dict(entry) for entry in layer] if isinstance(layer, list) else dict(layer)


def _refused(case_id: str, hazard: str, words: str, entry: str | None, *layers: Layer,
             media_type: str = LAYER_TAR, **options: Any) -> HostileCase:
    return HostileCase(case_id, hazard, layers, "refused", words=words, entry=entry, media_type=media_type,
                       options=options)


def _contained(case_id: str, hazard: str, path: str, *layers: Layer) -> HostileCase:
    return HostileCase(case_id, hazard, layers, "contained", path=path)


S = "{sentinel}"

REFUSED: tuple[HostileCase, ...] = (
    # H-1: names climbing out
    _refused("dotdot", "H-1", "path escapes the rootfs", "../sentinel/victim", [file("../sentinel/victim", "owned")]),
    _refused("dotdot-nested", "H-1", "path escapes the rootfs", "a/../../sentinel/victim",
             [directory("a"), file("a/../../sentinel/victim", "owned")]),
    _refused("dotdot-new-file", "H-1", "path escapes the rootfs", "./../planted", [file("./../planted", "owned")]),
    # H-3: a symlink, then a write through it
    _refused("symlink-to-root-then-write", "H-3", "absolute symlink", f"a{S}/victim",
             [symlink("a", "/"), file(f"a{S}/victim", "owned")]),
    _refused("symlink-absolute-then-write", "H-3", "absolute symlink", "a/victim",
             [symlink("a", S), file("a/victim", "owned")]),
    _refused("symlink-up-then-write", "H-3", "escapes the rootfs", "a/victim",
             [symlink("a", "../sentinel"), file("a/victim", "owned")]),
    _refused("symlink-dotdot-dotdot-then-write", "H-3", "escapes the rootfs", "d/a/sentinel/victim",
             [directory("d"), symlink("d/a", "../.."), file("d/a/sentinel/victim", "owned")]),
    _refused("symlink-chain-then-write", "H-3", "escapes the rootfs", "a/victim",
             [symlink("a", "b"), symlink("b", "c/../../sentinel"), directory("c"), file("a/victim", "owned")]),
    _refused("symlink-then-mkdir-through-it", "H-3", "absolute symlink", "a/new",
             [symlink("a", S), directory("a/new")]),
    # H-18: a symlink replaces a lower directory, then the layer writes into it
    _refused("symlink-replaces-directory", "H-18", "absolute symlink", "etc/victim",
             [directory("etc"), file("etc/hosts", "x")], [symlink("etc", S), file("etc/victim", "owned")]),
    _refused("symlink-empty-target", "H-7", "symlink with an empty target", "a", [symlink("a", "")]),
    # H-19
    _refused("symlink-loop", "H-19", "too many levels of symbolic links", "a/x",
             [symlink("a", "b"), symlink("b", "a"), file("a/x")]),
    # H-4, H-5: hardlinks out, or through a symlink, or to a directory
    _refused("hardlink-to-etc-passwd", "H-4", "does not exist in the rootfs", "x", [hardlink("x", "/etc/passwd")]),
    _refused("hardlink-to-sentinel-absolute", "H-4", "does not exist in the rootfs", "x",
             [hardlink("x", f"{S}/victim")]),
    _refused("hardlink-dotdot", "H-4", "escapes the rootfs", "x", [hardlink("x", "../sentinel/victim")]),
    _refused("hardlink-through-absolute-symlink", "H-5", "absolute symlink", "x",
             [symlink("a", S), hardlink("x", "a/victim")]),
    _refused("hardlink-through-escaping-symlink", "H-5", "escapes the rootfs", "x",
             [symlink("a", "../sentinel"), hardlink("x", "a/victim")]),
    _refused("hardlink-to-directory", "H-4", "is a directory", "x", [directory("d"), hardlink("x", "d")]),
    _refused("hardlink-before-target", "H-27", "does not exist in the rootfs", "x",
             [hardlink("x", "later"), file("later", "data")]),
    # H-6: the root replaced
    _refused("root-as-symlink", "H-6", "can only be a directory", "./", [symlink("./", S)]),
    _refused("root-as-file", "H-6", "can only be a directory", ".", [file(".", "x")]),
    _refused("empty-name", "H-7", "can only be a directory", "", [file("", "x")]),
    # H-9, H-10, H-11, H-12: whiteouts (refusing H-9 is LAYER-WH-006; here only containment counts)
    _refused("whiteout-bare", "H-9", "whiteout names nothing", ".wh.", [marker(".wh.")]),
    _refused("whiteout-dot", "H-9", "whiteout names '.'", ".wh..", [marker(".wh..")]),
    _refused("whiteout-dotdot", "H-9", "whiteout names '..'", ".wh...", [marker(".wh...")]),
    _refused("whiteout-dotdot-in-dir", "H-9", "whiteout names '..'", "etc/.wh...",
             [directory("etc"), marker("etc/.wh...")]),
    _refused("whiteout-dot-in-dir", "H-9", "whiteout names '.'", "etc/.wh..", [directory("etc"), marker("etc/.wh..")]),
    _refused("whiteout-climbing-name", "H-1", "path escapes the rootfs", "../sentinel/.wh.victim",
             [marker("../sentinel/.wh.victim")]),
    _refused("whiteout-through-absolute-symlink", "H-10", "absolute symlink", "a/.wh.victim",
             [symlink("a", S), marker("a/.wh.victim")]),
    _refused("whiteout-through-escaping-symlink", "H-10", "escapes the rootfs", "a/.wh.victim",
             [symlink("a", "../sentinel"), marker("a/.wh.victim")]),
    _refused("opaque-through-absolute-symlink", "H-10", "absolute symlink", "a/.wh..wh..opq",
             [symlink("a", S), marker("a/.wh..wh..opq")]),
    _refused("opaque-through-lower-symlink", "H-10", "escapes the rootfs", "a/.wh..wh..opq",
             [symlink("a", "../sentinel")], [marker("a/.wh..wh..opq")]),
    _refused("whiteout-as-directory", "H-11", "whiteout name", ".wh.etc/passwd", [file(".wh.etc/passwd", "x")]),
    _refused("whiteout-as-symlink", "H-11", "must be a regular file", ".wh.x", [symlink(".wh.x", S)]),
    _refused("aufs-metadata", "H-12", "AUFS", ".wh..wh.aufs", [marker(".wh..wh.aufs")]),
    # H-13, H-14
    _refused("duplicate-entry", "H-13", "twice", "a", [file("a", "1"), file("a", "2")]),
    _refused("file-then-child", "H-14", "is not a directory", "a/b", [file("a", "x"), file("a/b", "y")]),
    _refused("dir-then-replaced-by-file", "H-13", "already wrote into", "d", [file("d/x"), file("d")]),
    # H-17: devices, when the policy says no (a knob of the reference)
    _refused("device-refused", "H-17", "refused by the devices policy", "dev/mem", [chardev("dev/mem", 1, 1)],
             devices="refuse"),
    # H-21: bombs, against the reference's limits
    _refused("too-many-entries", "H-21", "more than 3 entries", "d",
             [*(file(f"f{n}") for n in range(3)), directory("d")], max_entries=3),
    _refused("pax-bomb", "H-21", "metadata", None, recipe("pax-bomb"), max_metadata=1 << 20),
    _refused("sparse-bomb", "H-21", "claims 1073741824, sparse", "sparse", recipe("sparse-bomb"), max_bytes=64 << 20),
    _refused("gzip-bomb", "H-21", "passes the limit", None, recipe("gzip-bomb"), media_type=LAYER_GZIP,
             max_bytes=16 << 20),
    # H-20: truncation and corruption
    _refused("truncated-gzip", "H-20", "truncated gzip", None, recipe("truncated-gzip"), media_type=LAYER_GZIP),
    _refused("truncated-tar-data", "H-20", "truncated", "a", recipe("truncated-tar-data")),
    _refused("truncated-tar-header", "H-20", "truncated", "a", recipe("truncated-tar-header")),
    _refused("corrupt-second-header", "H-20", "corrupt tar header", "a", recipe("corrupt-second-header")),
    _refused("not-gzip", "H-20", "corrupt gzip", None, recipe("not-gzip"), media_type=LAYER_GZIP),
)

#: Layers that are acceptable once contained: the applier must keep them inside the rootfs.
CONTAINED: tuple[HostileCase, ...] = (
    # H-2: an absolute name is relative to the rootfs (tar strips the leading slash)
    _contained("absolute-name", "H-2", f"{S}/victim", [file(f"{S}/victim", "contained")]),
    # H-4: an absolute hardlink target names a file inside the rootfs
    _contained("hardlink-absolute-inside", "H-4", "localpasswd",
               [directory("etc"), file("etc/passwd", "root:x:0:0\n"), hardlink("localpasswd", "/etc/passwd")]),
    # H-1: `..` that stays inside is just a path
    _contained("dotdot-inside", "H-1", "b", [directory("a"), file("a/../b", "contained")]),
    # absolute symlinks are data: creating one is fine, only following it is not
    _contained("absolute-symlink-is-data", "H-3", "escape", [symlink("escape", f"{S}/victim")]),
    # relative symlinks that stay inside are followed (lib -> usr/lib), like go-archive's os.Root
    _contained("relative-symlink-inside", "H-3", "usr/lib/libc.so",
               [directory("usr"), directory("usr/lib"), symlink("lib", "usr/lib"), file("lib/libc.so", "elf")]),
)

CASES: dict[str, HostileCase] = {case.id: case for case in (*REFUSED, *CONTAINED)}


def cases(clause: str) -> list[HostileCase]:
    """The cases that check a clause, in corpus order (for parametrize)."""
    return [case for case in CASES.values() if clause in case.clauses]
