"""The cgroup manager on a fake cgroup v2 tree: the v2 logic a v1 or hybrid host cannot show.

FakeV2 plays the kernel's part in a temporary directory: a new cgroup gets the interface files of the
controllers its parent enables, cgroup.subtree_control follows the top-down and no-internal-process
rules (ENOENT, EBUSY), a write to a file that is not there fails as on cgroupfs, cgroup.procs moves a
process, cgroup.freeze sets `frozen` in cgroup.events. Every write is logged, so a test can say which
file got which value, in which order.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from conformance.ref.cglayout import CgroupError, Layout, detect_layout
from conformance.ref.cglimits import parse_resources
from conformance.ref.cgmanager import CgroupFiles, ContainerCgroup
from conformance.ref.specread import ConfigError

MIB = 1 << 20
ROOT_CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids")
#: The interface files each controller gives a non-root cgroup, with their first values.
FILES = {
    "": {"cgroup.controllers": "", "cgroup.subtree_control": "", "cgroup.procs": "", "cgroup.type": "domain",
         "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.freeze": "0", "cgroup.kill": "",
         "cpu.stat": "usage_usec 7\n"},
    "memory": {"memory.max": "max", "memory.high": "max", "memory.low": "0", "memory.swap.max": "max",
               "memory.current": "4096", "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"},
    "pids": {"pids.max": "max", "pids.current": "0", "pids.events": "max 2\n"},
    "cpu": {"cpu.max": "max 100000", "cpu.weight": "100",
            "cpu.stat": "usage_usec 7\nnr_periods 5\nnr_throttled 2\nthrottled_usec 900\n"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "io": {"io.max": ""},
}


class FakeV2(CgroupFiles):
    """A cgroup2 hierarchy at <tmp>/sys/fs/cgroup that behaves as the kernel does where the manager looks."""

    def __init__(self, tmp: Path, *, swap: bool = True) -> None:
        self.top = tmp / "sys/fs/cgroup"
        self.top.mkdir(parents=True)
        self.swap = swap
        for name, text in {"cgroup.controllers": " ".join(ROOT_CONTROLLERS), "cgroup.subtree_control": "",
                           "cgroup.procs": "1\n2\n"}.items():
            (self.top / name).write_text(text)
        (tmp / "mountinfo").write_text("30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n")
        self.layout: Layout = detect_layout(str(tmp / "mountinfo"), str(tmp))
        self.log: list[tuple[str, str]] = []

    def rel(self, path: str | Path) -> str:
        return "/" + os.path.relpath(path, self.top)

    def mkdir(self, path: str) -> None:
        os.mkdir(path)
        enabled = (Path(path).parent / "cgroup.subtree_control").read_text().split()
        for controller in ["", *enabled]:
            for name, text in FILES[controller].items():
                if name == "memory.swap.max" and not self.swap:
                    continue
                (Path(path) / name).write_text(text)
        (Path(path) / "cgroup.controllers").write_text(" ".join(enabled))

    def rmdir(self, path: str) -> None:
        here = Path(path)
        if any(p.is_dir() for p in here.iterdir()) or (here / "cgroup.procs").read_text().split():
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        for name in here.iterdir():
            name.unlink()
        here.rmdir()

    def write(self, path: str, text: str) -> None:
        target = Path(path)
        if not target.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        self.log.append((self.rel(path), text))
        if target.name == "cgroup.subtree_control":
            text = self._subtree_control(target, text)
        elif target.name == "cgroup.procs":
            for procs in self.top.rglob("cgroup.procs"):  # a process is in exactly one cgroup
                procs.write_text("".join(f"{p}\n" for p in procs.read_text().split() if p != text))
            if target.parent != self.top and (target.parent / "cgroup.subtree_control").read_text().split():
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
            text = target.read_text() + text + "\n"
        elif target.name == "cgroup.freeze":
            (target.parent / "cgroup.events").write_text(f"populated 0\nfrozen {text}\n")
        target.write_text(text)

    def _subtree_control(self, target: Path, text: str) -> str:
        on = set(target.read_text().split())
        available = set((target.parent / "cgroup.controllers").read_text().split())
        for word in text.split():
            controller = word[1:]
            if controller not in available:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(target))
            if target.parent != self.top and (target.parent / "cgroup.procs").read_text().split():
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(target))
            (on.add if word[0] == "+" else on.discard)(controller)
        for child in (p for p in target.parent.iterdir() if p.is_dir()):  # children get the controller's files
            for controller in on:
                for name, value in FILES[controller].items():
                    fresh = not (child / name).exists() or name == "cpu.stat"  # cpu.stat: more keys with cpu
                    if fresh and (name != "memory.swap.max" or self.swap):
                        (child / name).write_text(value)
            (child / "cgroup.controllers").write_text(" ".join(sorted(on)))
        return " ".join(sorted(on))

    def read_file(self, rel: str) -> str:
        return (self.top / rel.lstrip("/")).read_text().strip()


@pytest.fixture(name="fake")
def fake_fixture(tmp_path: Path) -> FakeV2:
    return FakeV2(tmp_path)


ALL = {"memory": {"limit": 64 * MIB, "reservation": 32 * MIB, "swap": 96 * MIB}, "pids": {"limit": 10},
       "cpu": {"shares": 2048, "quota": 50000, "period": 200000, "cpus": "0-1", "mems": "0"}}


def test_the_controllers_are_enabled_from_the_top_and_the_limits_written(fake: FakeV2) -> None:
    """Top-down: each ancestor's cgroup.subtree_control gets what the limits need (and memory, pids for usage)."""
    cg = ContainerCgroup.create(fake.layout, "/conformance-a/b/c", parse_resources(ALL), files=fake)
    assert cg.dirs == {"unified": str(fake.top / "conformance-a/b/c")}
    for ancestor in ("", "conformance-a", "conformance-a/b"):
        assert fake.read_file(f"{ancestor}/cgroup.subtree_control") == "cpu cpuset memory pids"
    assert fake.read_file("/conformance-a/b/c/cgroup.subtree_control") == ""
    assert {name: fake.read_file(f"/conformance-a/b/c/{name}") for name in (
        "memory.max", "memory.swap.max", "memory.low", "pids.max", "cpu.weight", "cpu.max", "cpuset.cpus",
        "cpuset.mems")} == {"memory.max": str(64 * MIB), "memory.swap.max": str(32 * MIB),
                            "memory.low": str(32 * MIB), "pids.max": "10", "cpu.weight": "174",
                            "cpu.max": "50000 200000", "cpuset.cpus": "0-1", "cpuset.mems": "0"}
    assert fake.read_file("/conformance-a/b/c/cgroup.controllers") == "cpu cpuset memory pids"


def test_only_what_is_missing_is_enabled_and_io_stays_off(fake: FakeV2) -> None:
    (fake.top / "cgroup.subtree_control").write_text("memory pids")
    ContainerCgroup.create(fake.layout, "/conformance-a", parse_resources({"cpu": {"quota": 10000}}), files=fake)
    assert [text for path, text in fake.log if path.endswith("subtree_control")] == ["+cpu"]
    assert fake.read_file("/cgroup.subtree_control") == "cpu memory pids"


def test_unified_writes_each_key_verbatim_last(fake: FakeV2) -> None:
    """config-linux.md § unified: the runtime enables what is needed and writes every key as given."""
    resources = parse_resources({"memory": {"limit": 32 * MIB}, "unified": {"memory.max": str(40 * MIB),
                                                                            "io.max": "8:0 rbps=1048576"}})
    ContainerCgroup.create(fake.layout, "/conformance-u", resources, files=fake)
    assert "io" in fake.read_file("/cgroup.subtree_control").split()
    assert [(p, t) for p, t in fake.log if not p.startswith("/cgroup.")][-3:] == [
        ("/conformance-u/memory.max", str(32 * MIB)), ("/conformance-u/io.max", "8:0 rbps=1048576"),
        ("/conformance-u/memory.max", str(40 * MIB))]
    assert fake.read_file("/conformance-u/memory.max") == str(40 * MIB)  # unified wins


@pytest.mark.parametrize(("unified", "words"), [
    ({"foo.bar": "1"}, "the foo controller is not available"),
    ({"hugetlb.2MB.max": "0"}, "the hugetlb controller is not available"),
    ({"memory.nosuchfile": "1"}, "No such file"),
])
def test_unified_with_an_absent_controller_or_file_fails_and_leaves_nothing(fake: FakeV2, unified: dict[str, str],
                                                                             words: str) -> None:
    with pytest.raises(CgroupError, match=words) as caught:
        ContainerCgroup.create(fake.layout, "/conformance-u/x", parse_resources({"unified": unified}), files=fake)
    assert f"linux.resources.unified.{next(iter(unified))}" in str(caught.value)
    assert not (fake.top / "conformance-u").exists()


def test_swap_on_a_host_without_swap(tmp_path: Path) -> None:
    """No memory.swap.max: "no swap" (swap == limit) and "max" hold anyway; a real swap allowance cannot."""
    fake = FakeV2(tmp_path, swap=False)
    cg = ContainerCgroup.create(fake.layout, "/conformance-s", parse_resources(
        {"memory": {"limit": 64 * MIB, "swap": 64 * MIB}}), files=fake)
    assert fake.read_file("/conformance-s/memory.max") == str(64 * MIB)
    cg.remove()
    with pytest.raises(CgroupError, match=r"linux\.resources\.memory\.swap"):
        ContainerCgroup.create(fake.layout, "/conformance-s", parse_resources(
            {"memory": {"limit": 64 * MIB, "swap": 128 * MIB}}), files=fake)
    assert not (fake.top / "conformance-s").exists()


def test_a_populated_ancestor_is_evacuated_to_a_leaf(fake: FakeV2) -> None:
    """No internal processes: the ancestor's processes move to <ancestor>/init, then its controllers go on."""
    fake.mkdir(str(fake.top / "busy"))
    (fake.top / "busy/cgroup.procs").write_text("4242\n4343\n")
    cg = ContainerCgroup.create(fake.layout, "/busy/conformance-c", parse_resources({"pids": {"limit": 5}}),
                                files=fake)
    assert cg.evacuated == [str(fake.top / "busy")]
    assert fake.read_file("/busy/cgroup.procs") == "" and fake.read_file("/busy/init/cgroup.procs").split() == [
        "4242", "4343"]
    assert fake.read_file("/busy/conformance-c/pids.max") == "5"
    cg.remove()
    assert not (fake.top / "busy/conformance-c").exists() and (fake.top / "busy/init").exists()


def test_a_relative_path_goes_below_the_parent_of_the_runtimes_cgroup(fake: FakeV2) -> None:
    fake.mkdir(str(fake.top / "user.slice"))
    fake.mkdir(str(fake.top / "user.slice/session.scope"))
    cg = ContainerCgroup.create(fake.layout, "conformance-r", parse_resources({"pids": {"limit": 5}}),
                                own={"unified": "/user.slice/session.scope"}, files=fake)
    assert cg.dirs["unified"] == str(fake.top / "user.slice/conformance-r")


def test_removal_removes_the_cgroup_and_the_ancestors_it_made(fake: FakeV2) -> None:
    fake.mkdir(str(fake.top / "kept"))
    cg = ContainerCgroup.create(fake.layout, "/kept/conformance-a/b", parse_resources(ALL), files=fake)
    assert cg.created == [str(fake.top / "kept/conformance-a"), str(fake.top / "kept/conformance-a/b")]
    cg.remove()
    cg.remove()  # idempotent
    assert not (fake.top / "kept/conformance-a").exists() and (fake.top / "kept").exists()


def test_a_cgroup_with_processes_or_frozen_is_refused(fake: FakeV2) -> None:
    """config-linux.md: a runtime MAY check the cgroup is fit and MUST fail if not (runc refuses both)."""
    fake.mkdir(str(fake.top / "conformance-busy"))
    (fake.top / "conformance-busy/cgroup.procs").write_text("77\n")
    with pytest.raises(CgroupError, match="already has processes"):
        ContainerCgroup.create(fake.layout, "/conformance-busy", files=fake)
    fake.mkdir(str(fake.top / "conformance-frozen"))
    (fake.top / "conformance-frozen/cgroup.events").write_text("populated 0\nfrozen 1\n")
    with pytest.raises(CgroupError, match="is frozen"):
        ContainerCgroup.create(fake.layout, "/conformance-frozen", files=fake)
    assert (fake.top / "conformance-busy").exists()  # not made here: not removed either


def test_freeze_and_thaw_write_cgroup_freeze_and_wait_for_the_event(fake: FakeV2) -> None:
    cg = ContainerCgroup.create(fake.layout, "/conformance-f", files=fake)
    cg.freeze()
    assert cg.frozen() and fake.read_file("/conformance-f/cgroup.freeze") == "1"
    cg.thaw()
    assert not cg.frozen() and fake.read_file("/conformance-f/cgroup.freeze") == "0"
    ignored = ContainerCgroup.open(fake.layout, "/conformance-f", faults=frozenset({"freeze-ignored"}), files=fake)
    ignored.freeze()
    assert not ignored.frozen()


def test_stats_read_v2_files_into_the_common_names(fake: FakeV2) -> None:
    cg = ContainerCgroup.create(fake.layout, "/conformance-st", parse_resources({"cpu": {"shares": 100}}),
                                files=fake)
    assert cg.stats() == {"memory_usage_bytes": 4096, "memory_oom_count": 1, "memory_oom_kill_count": 1,
                          "memory_max_count": 3, "memory_high_count": 0, "pids_current_count": 0,
                          "pids_max_count": 2, "cpu_usage_usec": 7, "cpu_periods_count": 5,
                          "cpu_throttled_count": 2, "cpu_throttled_usec": 900}


def test_open_finds_an_existing_cgroup_only(fake: FakeV2) -> None:
    ContainerCgroup.create(fake.layout, "/conformance-o", files=fake)
    assert ContainerCgroup.open(fake.layout, "/conformance-o", files=fake).exists()
    with pytest.raises(CgroupError, match="not found"):
        ContainerCgroup.open(fake.layout, "/conformance-none", files=fake)


def test_a_limit_error_is_raised_before_anything_is_made(fake: FakeV2) -> None:
    with pytest.raises(ConfigError, match=r"cpu\.period"):
        ContainerCgroup.create(fake.layout, "/conformance-p", parse_resources({"cpu": {"period": 10}}), files=fake)
    assert not (fake.top / "conformance-p").exists() and fake.log == []
