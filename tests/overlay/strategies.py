"""Hypothesis strategies for overlay scenarios: small layer stacks over a small name space, and short
operation sequences on the merged view, in the contract of conformance/scenarios/overlay.py.

The name space is tiny on purpose (a, b, d, d/x, d/y, e, e/z and two new names): random stacks then
often put the same name in several layers, which is where overlay's rules (whiteouts, opaque dirs,
copy-up of parents, merged readdir) meet.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

PATHS = ("a", "b", "d", "d/x", "d/y", "e", "e/z")
NEW = ("new", "d/new")
DIRS = ("", "d", "e")
CONTENTS = ("1", "22", "hello")
MODES = (0o644, 0o600, 0o755)


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


@st.composite
def layer(draw: st.DrawFn, *, bottom: bool) -> list[dict[str, Any]]:
    """One layer's entries: parents before children; whiteouts and opaque dirs only above the bottom."""
    chosen = draw(st.lists(st.sampled_from(PATHS), unique=True, max_size=5))
    kinds = ["file", "dir", "symlink"] + ([] if bottom else ["whiteout", "opaque"])
    entries: dict[str, dict[str, Any]] = {}
    for path in sorted(chosen, key=lambda p: (p.count("/"), p)):
        parent = _parent(path)
        if parent and parent not in entries:
            entries[parent] = {"name": parent, "type": "dir"}
        if parent and entries[parent]["type"] != "dir":
            continue  # a child under a non-directory cannot be written
        kind = draw(st.sampled_from(kinds)) if path in ("d", "e") else draw(st.sampled_from(
            [k for k in kinds if k != "opaque"]))
        if kind == "file":
            entries[path] = {"name": path, "type": "file", "content": draw(st.sampled_from(CONTENTS)),
                             "mode": draw(st.sampled_from(MODES))}
        elif kind == "dir":
            entries[path] = {"name": path, "type": "dir"}
        elif kind == "opaque":
            entries[path] = {"name": path, "type": "dir", "opaque": True}
        elif kind == "symlink":
            entries[path] = {"name": path, "type": "symlink", "target": draw(st.sampled_from(["a", "d", "nowhere"]))}
        else:
            entries[path] = {"name": path, "type": "whiteout"}
    # a non-directory replacing a chosen parent drops the children already placed under it
    return [e for p, e in entries.items() if not (_parent(p) and entries.get(_parent(p), {}).get("type") != "dir")]


def op() -> st.SearchStrategy[dict[str, Any]]:
    """One operation on the merged view."""
    any_path = st.sampled_from(PATHS + NEW)
    return st.one_of(
        st.builds(lambda p: {"op": "read", "path": p}, any_path),
        st.builds(lambda p: {"op": "stat", "path": p}, any_path),
        st.builds(lambda p: {"op": "readdir", "path": p}, st.sampled_from(DIRS)),
        st.builds(lambda p, c: {"op": "create", "path": p, "content": c, "mode": 0o644}, any_path,
                  st.sampled_from(CONTENTS)),
        st.builds(lambda p, c: {"op": "write", "path": p, "content": c}, any_path, st.sampled_from(CONTENTS)),
        st.builds(lambda p, c: {"op": "append", "path": p, "content": c}, any_path, st.sampled_from(CONTENTS)),
        st.builds(lambda p: {"op": "truncate", "path": p, "size": 1}, any_path),
        st.builds(lambda p, m: {"op": "chmod", "path": p, "mode": m}, any_path, st.sampled_from(MODES)),
        st.builds(lambda p: {"op": "unlink", "path": p}, any_path),
        st.builds(lambda p: {"op": "rmdir", "path": p}, any_path),
        st.builds(lambda p: {"op": "mkdir", "path": p, "mode": 0o755}, any_path),
        st.builds(lambda p, t: {"op": "rename", "path": p, "to": t}, any_path, any_path),
        st.builds(lambda p, t: {"op": "link", "path": p, "to": t}, any_path, any_path),
        st.builds(lambda p: {"op": "symlink", "path": p, "target": "a"}, any_path),
    )


@st.composite
def scenario(draw: st.DrawFn) -> dict[str, Any]:
    """Params of one overlay.run: 1-3 lowers (top first), an upper, options, 0-4 ops."""
    count = draw(st.integers(min_value=1, max_value=3))
    lowers = [draw(layer(bottom=n == count - 1)) for n in range(count)]
    upper = draw(layer(bottom=False)) if draw(st.booleans()) else []
    options = draw(st.sampled_from([{}, {}, {"redirect_dir": "on"}, {"index": "on"}]))
    ops = draw(st.lists(op(), max_size=4))
    return {"lowers": lowers, "upper": upper, "options": options, "ops": ops}
