"""LAYER-HL/SYM/ATTR: hardlinks, symlinks and attributes come through an apply as the tar says."""

from __future__ import annotations

import pytest

from conformance.scenarios import layers
from conformance.scenarios.layers import directory, file, hardlink, symlink
from conformance.target import Target


@pytest.mark.clause("LAYER-HL-001")
def test_hardlink_within_a_layer_is_kept(target: Target) -> None:
    """A layer with file a and b hardlinked to a MUST give two names of one inode (nlink 2, same content)."""
    seen = target.observe(layers.apply([file("a", "shared"), hardlink("b", "a")]))
    target.expect("apply error", None, seen.get("error"))
    for name in ("a", "b"):
        entry = seen["tree"].get(name) or {}
        target.expect(f"rootfs/{name}", {"type": "file", "content": "shared", "nlink": 2},
                      {key: entry.get(key) for key in ("type", "content", "nlink")})


@pytest.mark.clause("LAYER-SYM-001")
def test_symlinks_keep_their_targets_verbatim(target: Target) -> None:
    """Symlinks to a/b, ../up and /etc/passwd MUST be applied with exactly those targets."""
    links = {"rel": "a/b", "up": "../up", "abs": "/etc/passwd"}
    seen = target.observe(layers.apply([symlink(name, to) for name, to in links.items()]))
    target.expect("apply error", None, seen.get("error"))
    for name, to in links.items():
        entry = seen["tree"].get(name) or {}
        target.expect(f"rootfs/{name}", {"type": "symlink", "target": to},
                      {"type": entry.get("type"), "target": entry.get("target")})
    target.expect("sentinel changed", False, seen["sentinel_changed"])


@pytest.mark.clause("LAYER-ATTR-001")
def test_modes_and_owners_are_kept(target: Target) -> None:
    """Entries with modes 0750/0600/0711 and uid:gid 1234:5678 MUST be applied with exactly those."""
    entries = [directory("d", mode=0o711, uid=1234, gid=5678), file("d/run", "x", mode=0o750, uid=1234, gid=5678),
               file("secret", "s", mode=0o600, uid=42, gid=43)]
    seen = target.observe(layers.apply(entries))
    target.expect("apply error", None, seen.get("error"))
    for entry in entries:
        got = seen["tree"].get(entry["name"]) or {}
        target.expect(f"rootfs/{entry['name']} (mode, uid, gid)", [oct(entry["mode"]), entry["uid"], entry["gid"]],
                      [oct(got.get("mode", 0)), got.get("uid"), got.get("gid")])
