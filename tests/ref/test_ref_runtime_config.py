"""config.json as the reference runtime reads it: what it refuses (naming the field), what it ignores, and the
default config; plus the pure helpers (mount options, path resolution inside the rootfs). No root needed."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from conformance.ref import nsapi
from conformance.ref.mountopts import parse_options
from conformance.ref.rootfs import resolve_in_root
from conformance.ref.runspec import IGNORED, ConfigError, default_config, load_bundle, parse_config


@pytest.fixture
def bundle(scratch: Path) -> Path:
    (scratch / "rootfs").mkdir()
    return scratch


def _parse(bundle: Path, change: dict[str, Any] | None = None, **linux: Any) -> Any:
    config = default_config(["sh"])
    for dotted, value in (change or {}).items():
        *path, last = dotted.split(".")
        target = config
        for part in path:
            target = target.setdefault(part, {})
        target[last] = value
    config["linux"].update(linux)
    return parse_config(copy.deepcopy(config), str(bundle))


@pytest.mark.parametrize(("change", "linux", "field", "words"), [
    ({}, {"namespaces": [{"type": "mount"}, {"type": "pidd"}]}, "linux.namespaces[1].type", "unknown namespace"),
    ({}, {"namespaces": [{"type": "mount"}, {"type": "uts"}, {"type": "uts"}]}, "linux.namespaces[2].type",
     "listed twice"),
    ({}, {"namespaces": [{"type": "mount"}, {"type": "net", "path": "proc/1/ns/net"}]},
     "linux.namespaces[1].type", "unknown namespace"),
    ({}, {"namespaces": [{"type": "mount"}, {"type": "network", "path": "proc/1/ns/net"}]},
     "linux.namespaces[1].path", "not an absolute path"),
    ({}, {"maskedPaths": ["proc/kcore"]}, "linux.maskedPaths[0]", "not an absolute path"),
    ({}, {"readonlyPaths": ["/proc/sys", "sys"]}, "linux.readonlyPaths[1]", "not an absolute path"),
    ({}, {"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}, "linux.uidMappings",
     "without a user namespace"),
    ({}, {"namespaces": [{"type": "mount"}, {"type": "user"}]}, "linux.uidMappings", "needs mappings"),
    ({}, {"namespaces": [{"type": "pid"}]}, "linux.namespaces", "new mount namespace"),
    ({}, {"rootfsPropagation": "rshared-ish"}, "linux.rootfsPropagation", "not one of"),
    ({}, {"sysctl": {"kernel.pid_max": "100"}}, "linux.sysctl.kernel.pid_max", "host"),
    ({}, {"sysctl": {"net.ipv4.ip_forward": "1"}, "namespaces": [{"type": "mount"}]},
     "linux.sysctl.net.ipv4.ip_forward", "needs a network namespace"),
    ({"hostname": "h"}, {"namespaces": [{"type": "mount"}]}, "hostname", "UTS namespace"),
    ({"process.terminal": True}, {}, "process.terminal", "console"),
    ({"process.args": []}, {}, "process.args", "at least one"),
    ({"process.args": "sh"}, {}, "process.args", "expected an array"),
    ({"process.cwd": "tmp"}, {}, "process.cwd", "not an absolute path"),
    ({"process.user.uid": "0"}, {}, "process.user.uid", "expected an integer"),
    ({"process.capabilities.bounding": ["CAP_FLY"]}, {}, "process.capabilities.bounding", "CAP_FLY"),
    ({"process.rlimits": [{"type": "RLIMIT_BEER", "soft": 1, "hard": 1}]}, {}, "process.rlimits[0].type",
     "unknown rlimit"),
    ({"hooks": {"prestart": [{"path": "/bin/true"}]}}, {}, "hooks", "not run"),
    ({"ociVersion": "2.0.0"}, {}, "ociVersion", "1.x"),
    ({"mounts": [{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}]}, {}, "mounts[0].type",
     "cgroup"),
    ({"mounts": [{"destination": "data", "type": "tmpfs"}]}, {}, "mounts[0].destination", "not an absolute path"),
    ({"mounts": [{"destination": "/data", "type": "bind"}]}, {}, "mounts[0].source", "needs a source"),
])
def test_a_bad_config_names_the_field(bundle: Path, change: dict[str, Any], linux: dict[str, Any], field: str,
                                      words: str) -> None:
    """config-linux.md's MUST-error cases and the runtime's own refusals: a ConfigError naming the field."""
    with pytest.raises(ConfigError) as raised:
        _parse(bundle, change, **linux)
    assert raised.value.field == field and words in str(raised.value), str(raised.value)
    assert str(raised.value).startswith(f"config.json {field}: ")


def test_malformed_or_missing_json_is_a_config_error(bundle: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.json does not exist"):
        load_bundle(str(bundle))
    (bundle / "config.json").write_text('{"ociVersion": "1.0.2",')
    with pytest.raises(ConfigError, match=r"is not valid JSON: .*line 1"):
        load_bundle(str(bundle))
    (bundle / "config.json").write_text('["not", "an", "object"]')
    with pytest.raises(ConfigError, match="expected an object"):
        load_bundle(str(bundle))


def test_unknown_fields_are_ignored_and_known_unsupported_ones_listed(bundle: Path) -> None:
    """config.md § Extensibility: unknown properties MUST be ignored; IGNORED ones are reported in Spec.ignored."""
    spec = _parse(bundle, {"vendor.example": {"x": 1}, "annotations": {"a": "b"}},
                  seccomp={"defaultAction": "SCMP_ACT_ERRNO"}, cgroupsPath="/conformance-x")
    assert spec.ignored == ("annotations", "linux.resources.devices", "linux.seccomp")
    assert set(spec.ignored) <= set(IGNORED)


def test_the_default_config_parses_into_the_runc_defaults(bundle: Path) -> None:
    spec = _parse(bundle)
    assert [n.type for n in spec.linux.namespaces] == ["pid", "network", "ipc", "uts", "mount", "cgroup"]
    assert [m.destination for m in spec.mounts] == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"]
    assert "/proc/kcore" in spec.linux.masked_paths and "/proc/sys" in spec.linux.readonly_paths
    assert spec.root_path == os.path.realpath(bundle / "rootfs") and not spec.root_readonly
    assert spec.process.capabilities is not None and spec.process.no_new_privileges


def test_the_default_config_with_user_namespace_maps_is_rootless_friendly(bundle: Path) -> None:
    config = default_config(["id"], hostname="h", namespaces=("pid", "mount", "uts"), user_ns_maps=[(0, 1000, 1)],
                            readonly_root=True)
    sysfs = next(m for m in config["mounts"] if m["destination"] == "/sys")
    devpts = next(m for m in config["mounts"] if m["destination"] == "/dev/pts")
    assert sysfs["type"] == "none" and "rbind" in sysfs["options"] and "ro" in sysfs["options"]
    assert "gid=5" not in devpts["options"] and all(m["destination"] != "/dev/mqueue" for m in config["mounts"])
    spec = parse_config(json.loads(json.dumps(config)), str(bundle))
    assert [n.type for n in spec.linux.namespaces] == ["pid", "mount", "uts", "user"]
    assert [(m.container_id, m.host_id, m.size) for m in spec.linux.gid_mappings] == [(0, 1000, 1)]
    assert spec.root_readonly and spec.hostname == "h"


def test_each_default_config_is_a_fresh_dict() -> None:
    first = default_config(["a"])
    first["mounts"].clear()
    first["linux"]["maskedPaths"].append("/x")
    assert default_config(["a"])["mounts"] and "/x" not in default_config(["a"])["linux"]["maskedPaths"]


def test_mount_options_split_into_flags_propagation_and_data() -> None:
    tmpfs = parse_options(["nosuid", "strictatime", "mode=755", "size=65536k", "rw"], "tmpfs")
    assert (tmpfs.flags, tmpfs.data, tmpfs.bind) == (nsapi.MS_NOSUID | nsapi.MS_STRICTATIME, "mode=755,size=65536k",
                                                     False)
    bind = parse_options(["rbind", "ro", "rprivate", "nodev"], "none")
    assert bind.bind and bind.flags & nsapi.MS_REC and bind.propagation == (nsapi.MS_PRIVATE | nsapi.MS_REC,)
    assert bind.remount_flags == nsapi.MS_RDONLY | nsapi.MS_NODEV
    assert parse_options([], "bind").bind and not parse_options(["rw"], "bind").remount_flags


def test_paths_resolve_inside_the_rootfs(scratch: Path) -> None:
    """A symlink, absolute or full of "..", cannot lead a mount destination out of the rootfs."""
    root = scratch / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc", root / "abs")
    os.symlink("../../../../..", root / "up")
    os.symlink("loop", root / "loop")
    assert resolve_in_root(str(root), "/abs/x") == str(root / "etc" / "x")
    assert resolve_in_root(str(root), "/up/etc/../etc/y") == str(root / "etc" / "y")
    assert resolve_in_root(str(root), "/../../missing/z") == str(root / "missing" / "z")
    with pytest.raises(OSError, match="too many levels"):
        resolve_in_root(str(root), "/loop/x")
