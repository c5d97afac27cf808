"""The reference cgroup code without a kernel: conversions, config parsing, the write plan, layouts, flags.

Each statement is checked against the numbers runc and crun use (shares to weight), the spec's words
(swap is memory+swap, pids 0 is 0) and the kernel's bounds (the CFS period); each limit fault of the
reference runtime changes the planned writes.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.ref.cglayout import CgroupError, check_path, detect_layout, own_cgroups
from conformance.ref.cglimits import (
    Resources,
    Write,
    linear_shares_to_weight,
    parse_resources,
    plan,
    shares_to_weight,
)
from conformance.ref.cgmanager import cgroup_dirs
from conformance.ref.runflags import add_resource_flags, parse_bytes, resources_from_args, resources_from_flags
from conformance.ref.specread import ConfigError

MIB = 1 << 20


# Shares and weight ----------------------------------------------------------------------------------------


def test_shares_convert_to_weight_as_runc_and_crun_do() -> None:
    """runc >= 1.3.2 / crun >= 1.23: the ends and the default map onto each other; 0 stays unset."""
    assert [shares_to_weight(s) for s in (0, 2, 1024, 262144)] == [0, 1, 100, 10000]
    assert [shares_to_weight(s) for s in (1, 3, 512, 2048, 300000)] == [1, 2, 59, 174, 10000]


def test_the_old_linear_formula_sends_the_default_to_39() -> None:
    """The formula the wrong-shares-conversion fault uses: 1 + ((S - 2) * 9999) / 262142."""
    assert [linear_shares_to_weight(s) for s in (2, 1024, 262144)] == [1, 39, 10000]


@given(st.integers(min_value=2, max_value=262143))
def test_shares_to_weight_is_monotonic_and_in_range(shares: int) -> None:
    assert 1 <= shares_to_weight(shares) <= shares_to_weight(shares + 1) <= 10000


# Parsing linux.resources ----------------------------------------------------------------------------------


def test_resources_parse_into_frozen_data_with_zero_as_unset() -> None:
    doc = {"memory": {"limit": 64 * MIB, "reservation": 0, "swap": 128 * MIB, "kernel": 5},
           "pids": {"limit": 0}, "cpu": {"shares": 512, "quota": 0, "period": 200000, "cpus": "0-1", "mems": ""},
           "unified": {"memory.high": "100000", "cgroup.max.depth": "3"}, "devices": [{"allow": False}]}
    assert parse_resources(doc) == Resources(64 * MIB, None, 128 * MIB, 0, 512, None, 200000, "0-1", None,
                                             (("cgroup.max.depth", "3"), ("memory.high", "100000")))
    assert not parse_resources({"devices": [{"allow": False, "access": "rwm"}]}).any_set


@pytest.mark.parametrize(("doc", "field", "words"), [
    ({"memory": {"limit": "64m"}}, "linux.resources.memory.limit", "expected an integer"),
    ({"memory": {"limit": -2}}, "linux.resources.memory.limit", "below -1"),
    ({"memory": {"swap": 64 * MIB}}, "linux.resources.memory.swap", "needs memory.limit"),
    ({"memory": {"limit": 64 * MIB, "swap": 32 * MIB}}, "linux.resources.memory.swap", "below memory.limit"),
    ({"pids": {}}, "linux.resources.pids.limit", "required"),
    ({"pids": {"limit": -5}}, "linux.resources.pids.limit", "below -1"),
    ({"cpu": {"shares": -1}}, "linux.resources.cpu.shares", "below 0"),
    ({"cpu": {"cpus": "0-1;rm"}}, "linux.resources.cpu.cpus", "list format"),
    ({"unified": {"../memory.max": "1"}}, "linux.resources.unified.../memory.max", "no '/'"),
    ({"unified": {"memory.high": 5}}, "linux.resources.unified.memory.high", "expected a string"),
])
def test_a_bad_resource_is_a_config_error_naming_the_field(doc: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        parse_resources(doc)
    assert caught.value.field == field


# The writes -------------------------------------------------------------------------------------------------

ALL = parse_resources({"memory": {"limit": 64 * MIB, "reservation": 32 * MIB, "swap": 96 * MIB},
                       "pids": {"limit": 10},
                       "cpu": {"shares": 512, "quota": 50000, "period": 200000, "cpus": "0", "mems": "0"}})


def files(writes: list[Write]) -> dict[str, str]:
    return {w.file: w.value for w in writes}


def test_v2_writes() -> None:
    """memory.max, memory.swap.max = swap - limit, memory.low, pids.max, cpu.weight, cpu.max "Q P", cpuset."""
    assert files(plan(ALL, 2)) == {
        "cpuset.cpus": "0", "cpuset.mems": "0", "memory.swap.max": str(32 * MIB), "memory.max": str(64 * MIB),
        "memory.low": str(32 * MIB), "pids.max": "10", "cpu.weight": "59", "cpu.max": "50000 200000"}


def test_v1_writes_with_memsw_after_the_limit_on_a_fresh_cgroup() -> None:
    writes = plan(ALL, 1)
    assert files(writes) == {
        "cpuset.cpus": "0", "cpuset.mems": "0", "memory.limit_in_bytes": str(64 * MIB),
        "memory.memsw.limit_in_bytes": str(96 * MIB), "memory.soft_limit_in_bytes": str(32 * MIB), "pids.max": "10",
        "cpu.shares": "512", "cpu.cfs_period_us": "200000", "cpu.cfs_quota_us": "50000"}
    order = [w.file for w in writes]
    assert order.index("memory.limit_in_bytes") < order.index("memory.memsw.limit_in_bytes")


def test_v1_raises_memsw_first_when_the_limit_in_place_is_lower() -> None:
    """memsw >= limit at every moment (runc setMemoryAndSwap): going up from 16 MiB, memsw goes first."""
    order = [w.file for w in plan(ALL, 1, current_memory_limit=16 * MIB)]
    assert order.index("memory.memsw.limit_in_bytes") < order.index("memory.limit_in_bytes")
    unlimited = plan(parse_resources({"memory": {"limit": 64 * MIB, "swap": -1}}), 1, current_memory_limit=16 * MIB)
    assert [(w.file, w.value) for w in unlimited] == [("memory.memsw.limit_in_bytes", "-1"),
                                                      ("memory.limit_in_bytes", str(64 * MIB))]


@pytest.mark.parametrize(("memory", "swap_max"), [
    ({"limit": 64 * MIB, "swap": 64 * MIB}, "0"),  # memory+swap == memory: no swap
    ({"limit": 64 * MIB, "swap": -1}, "max"),
    ({"limit": -1}, "max"),  # unlimited memory with no swap set: unlimited swap too (runc)
])
def test_v2_swap_is_the_total_minus_the_limit(memory: dict[str, int], swap_max: str) -> None:
    assert files(plan(parse_resources({"memory": memory}), 2))["memory.swap.max"] == swap_max


def test_pids_minus_one_is_max_and_zero_is_zero() -> None:
    """config-linux.md: -1 is no limit; 0 SHOULD be the kernel's 0 (spec PR #1279)."""
    assert files(plan(parse_resources({"pids": {"limit": -1}}), 2)) == {"pids.max": "max"}
    assert files(plan(parse_resources({"pids": {"limit": 0}}), 1)) == {"pids.max": "0"}


def test_a_quota_without_period_gets_the_default_period_and_a_period_alone_no_quota() -> None:
    assert files(plan(parse_resources({"cpu": {"quota": 20000}}), 2)) == {"cpu.max": "20000 100000"}
    assert files(plan(parse_resources({"cpu": {"period": 50000}}), 2)) == {"cpu.max": "max 50000"}
    assert files(plan(parse_resources({"cpu": {"quota": -1}}), 1)) == {"cpu.cfs_period_us": "100000",
                                                                       "cpu.cfs_quota_us": "-1"}


@pytest.mark.parametrize("period", [999, 1000001])
def test_a_period_out_of_the_kernels_range_is_an_error_naming_the_field(period: int) -> None:
    with pytest.raises(ConfigError, match=r"outside \[1000, 1000000\]") as caught:
        plan(parse_resources({"cpu": {"quota": 1000, "period": period}}), 2)
    assert caught.value.field == "linux.resources.cpu.period"


def test_unified_is_written_last_verbatim_on_v2_and_refused_on_v1() -> None:
    resources = parse_resources({"memory": {"limit": 32 * MIB}, "unified": {"memory.max": str(40 * MIB)}})
    assert [(w.controller, w.file, w.value) for w in plan(resources, 2)] == [
        ("memory", "memory.max", str(32 * MIB)), ("memory", "memory.max", str(40 * MIB))]  # unified wins
    with pytest.raises(ConfigError, match="unified resources need cgroup v2") as caught:
        plan(resources, 1)
    assert caught.value.field == "linux.resources.unified"


# Each limit fault changes the plan ---------------------------------------------------------------------------

FAULTED = parse_resources({"memory": {"limit": 64 * MIB, "reservation": 32 * MIB, "swap": 96 * MIB},
                           "pids": {"limit": 0},
                           "cpu": {"shares": 1024, "quota": 50000, "period": 200000, "cpus": "0"},
                           "unified": {"memory.high": "1"}})


@pytest.mark.parametrize(("fault", "version", "right", "wrong"), [
    ("memory-limit-wrong-file", 2, {"memory.max": str(64 * MIB)}, {"memory.high": str(64 * MIB)}),
    ("memory-limit-wrong-file", 1, {"memory.limit_in_bytes": str(64 * MIB)},
     {"memory.soft_limit_in_bytes": str(64 * MIB)}),
    ("wrong-shares-conversion", 2, {"cpu.weight": "100"}, {"cpu.weight": "39"}),
    ("wrong-shares-conversion", 1, {"cpu.shares": "1024"}, {"cpu.shares": "100"}),
    ("pids-limit-ignored", 2, {"pids.max": "0"}, {}),
    ("pids-zero-unlimited", 2, {"pids.max": "0"}, {"pids.max": "max"}),
    ("cpu-period-ignored", 2, {"cpu.max": "50000 200000"}, {"cpu.max": "50000 100000"}),
    ("cpu-quota-ignored", 2, {"cpu.max": "50000 200000"}, {}),
    ("cpuset-ignored", 2, {"cpuset.cpus": "0"}, {}),
    ("swap-not-converted", 2, {"memory.swap.max": str(32 * MIB)}, {"memory.swap.max": str(96 * MIB)}),
    ("swap-not-converted", 1, {"memory.memsw.limit_in_bytes": str(96 * MIB)},
     {"memory.memsw.limit_in_bytes": str(160 * MIB)}),
    ("reservation-ignored", 2, {"memory.low": str(32 * MIB)}, {}),
    ("reservation-ignored", 1, {"memory.soft_limit_in_bytes": str(32 * MIB)}, {}),
    ("unified-ignored", 2, {"memory.high": "1"}, {}),
    ("limit-and-reservation-swapped", 2, {"memory.max": str(64 * MIB), "memory.low": str(32 * MIB)},
     {"memory.max": str(32 * MIB), "memory.low": str(64 * MIB)}),
])
def test_each_limit_fault_changes_a_write(fault: str, version: int, right: dict[str, str],
                                          wrong: dict[str, str]) -> None:
    resources = FAULTED if version == 2 else dataclasses.replace(FAULTED, unified=())  # unified: v2 only
    good = [(w.file, w.value) for w in plan(resources, version)]
    bad = [(w.file, w.value) for w in plan(resources, version, frozenset({fault}))]
    assert set(right.items()) <= set(good) and not set(wrong.items()) & set(good)
    assert set(wrong.items()) <= set(bad) and not set(right.items()) & set(bad)


def test_the_period_clamped_fault_moves_the_period_into_range() -> None:
    resources = parse_resources({"cpu": {"quota": 1000, "period": 10}})
    assert files(plan(resources, 2, frozenset({"period-clamped"}))) == {"cpu.max": "1000 1000"}


def test_the_unified_ignored_fault_takes_unified_on_v1_without_error() -> None:
    assert plan(parse_resources({"unified": {"memory.high": "1"}}), 1, frozenset({"unified-ignored"})) == []


# Layouts and paths ------------------------------------------------------------------------------------------

V1_LINES = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
90 60 0:32 / /mnt/again rw,relatime - cgroup cgroup rw,memory
"""
UNIFIED_LINE = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
V2_LINES = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"


def _mountinfo(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mountinfo"
    path.write_text(text)
    return str(path)


def test_the_layout_comes_from_the_mount_types(tmp_path: Path) -> None:
    """v1 (named hierarchies and second mounts left out), hybrid (v1 + cgroup2), v2 (cgroup2 alone)."""
    v1 = detect_layout(_mountinfo(tmp_path, V1_LINES), str(tmp_path))
    assert v1.mode == "v1" and [h.key for h in v1.hierarchies] == ["cpu,cpuacct", "memory", "pids"]
    assert v1.hierarchy_for("cpuacct") == v1.hierarchy_for("cpu") and v1.hierarchy_for("cpuset") is None
    assert v1.hierarchies[1].mountpoint == str(tmp_path / "sys/fs/cgroup/memory")
    hybrid = detect_layout(_mountinfo(tmp_path, V1_LINES + UNIFIED_LINE), str(tmp_path))
    assert hybrid.mode == "hybrid" and hybrid.limits_version == 1 and hybrid.unified is not None
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/cgroup.controllers").write_text("cpu memory pids\n")
    v2 = detect_layout(_mountinfo(tmp_path, V2_LINES), str(tmp_path))
    assert v2.mode == "v2" and v2.limits_version == 2 and v2.hierarchy_for("memory") == v2.unified
    assert v2.unified is not None and v2.unified.controllers == {"cpu", "memory", "pids"}
    with pytest.raises(CgroupError, match="no cgroup filesystem is mounted"):
        detect_layout(_mountinfo(tmp_path, "1 0 0:1 / / rw - ext4 /dev/sda rw\n"))


def test_this_host_is_seen_as_it_is_mounted() -> None:
    """Whatever this host is, its mode follows from its mountinfo, and every hierarchy is a directory."""
    layout = detect_layout()
    assert layout.mode in ("v1", "v2", "hybrid")
    assert all(Path(h.mountpoint).is_dir() for h in layout.hierarchies)


def test_own_cgroups_read_every_line(tmp_path: Path) -> None:
    (tmp_path / "cgroup").write_text("9:name=systemd:/\n4:memory:/a/b\n2:cpu,cpuacct:/c\n0::/u\n")
    assert own_cgroups(str(tmp_path / "cgroup")) == {"memory": "/a/b", "cpu": "/c", "cpuacct": "/c", "unified": "/u"}


@pytest.mark.parametrize(("path", "words"), [
    ("system.slice:conformance:x", "systemd driver"), ("/a/../../etc", "'..'"), ("/", "root cgroup"), ("", "root"),
])
def test_a_cgroups_path_that_is_no_cgroupfs_path_is_refused(path: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        check_path(path)


def test_paths_are_normalised() -> None:
    assert [check_path(p) for p in ("/a//b/./c/", "a/b")] == ["/a/b/c", "a/b"]


def test_where_a_cgroups_path_lands(tmp_path: Path) -> None:
    """Absolute: below each mount point. Relative: below the runtime's cgroup (v1), its parent (v2, runc fs2)."""
    own = {"memory": "/process_api/x", "cpu": "/", "cpuacct": "/", "pids": "/p", "unified": "/u/session.scope"}
    v1 = detect_layout(_mountinfo(tmp_path, V1_LINES + UNIFIED_LINE), str(tmp_path))
    root = tmp_path / "sys/fs/cgroup"
    assert cgroup_dirs(v1, "/conformance-a", own) == {
        "cpu": f"{root}/cpu,cpuacct/conformance-a", "cpuacct": f"{root}/cpu,cpuacct/conformance-a",
        "memory": f"{root}/memory/conformance-a", "pids": f"{root}/pids/conformance-a",
        "unified": f"{root}/unified/conformance-a"}
    assert cgroup_dirs(v1, "conformance-a", own) == {
        "cpu": f"{root}/cpu,cpuacct/conformance-a", "cpuacct": f"{root}/cpu,cpuacct/conformance-a",
        "memory": f"{root}/memory/process_api/x/conformance-a", "pids": f"{root}/pids/p/conformance-a",
        "unified": f"{root}/unified/u/session.scope/conformance-a"}
    v2 = detect_layout(_mountinfo(tmp_path, V2_LINES), str(tmp_path))
    assert cgroup_dirs(v2, "conformance-a", own) == {"unified": f"{root}/u/conformance-a"}


# Docker-like flags ------------------------------------------------------------------------------------------


def test_sizes_read_like_dockers() -> None:
    assert [parse_bytes(t) for t in ("512", "64m", "64MB", "1g", "1.5k", "2GiB", "-1")] == [
        512, 64 * MIB, 64 * MIB, 1 << 30, 1536, 2 << 30, -1]
    with pytest.raises(ConfigError, match="not a size"):
        parse_bytes("lots")


def test_run_flags_become_resources() -> None:
    assert resources_from_flags({"memory": "64m", "memory-swap": "-1", "pids-limit": "10", "cpus": "1.5",
                                 "cpuset-cpus": "0", "cpu-shares": "512"}) == {
        "memory": {"limit": 64 * MIB, "swap": -1}, "pids": {"limit": 10},
        "cpu": {"quota": 150000, "period": 100000, "cpus": "0", "shares": 512}}
    with pytest.raises(ConfigError, match=r"at least 0\.01 CPUs"):
        resources_from_flags({"cpus": "0.001"})
    with pytest.raises(ConfigError, match="not a resource flag"):
        resources_from_flags({"memory-swappiness": "0"})


def test_the_flags_have_help_and_parse_from_a_command_line() -> None:
    parser = argparse.ArgumentParser(prog="run")
    add_resource_flags(parser)
    text = parser.format_help()
    assert all(f"--{flag}" in text for flag in ("memory", "memory-swap", "pids-limit", "cpus", "cpuset-cpus",
                                                "cpu-shares"))
    assert resources_from_args(parser.parse_args(["--memory", "32m", "--cpus", "0.5"])) == {
        "memory": {"limit": 32 * MIB}, "cpu": {"quota": 50000, "period": 100000}}
    assert resources_from_args(parser.parse_args([])) == {}


def test_every_runtime_fault_has_a_test_in_the_runtime_or_cgroup_tests() -> None:
    """Each FAULTS entry is named in a parametrized test here or in test_ref_runtime*.py (which asserts it)."""
    from conformance.ref.runtime import FAULTS

    here = Path(__file__).parent
    sources = "".join(p.read_text() for pattern in ("test_ref_runtime*.py", "test_ref_cgroups*.py")
                      for p in here.glob(pattern))
    assert [name for name in FAULTS if f'"{name}"' not in sources] == []
