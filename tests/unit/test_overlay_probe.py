"""The probe's overlay.run on real mounts: the kernel and fuse-overlayfs answer in the contract's shapes
(conformance/scenarios/overlay.py), and no scenario leaves a mount or a fuse-overlayfs process behind,
whether it ends well, crashes in an op or is stopped with SIGTERM."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from conformance.hosts import resolve
from conformance.probe import overlay_checks
from conformance.probe.actions import Context, NotApplicable
from conformance.probe.clean import leftover_mounts, leftover_paths
from conformance.scenarios import Scenario
from conformance.scenarios import overlay as ovl
from conformance.transport import ProbeClient, build_bundle
from tests.conftest import needs_root, which

LOWER = [{"name": "f", "content": "lower"}, {"name": "d", "type": "dir"}, {"name": "d/x", "content": "x"},
         {"name": "fifo", "type": "fifo"}]

#: One scenario per thing the probe must get right, with what both implementations answer.
SCENARIOS = {
    "copy-up": ovl.run([LOWER], [ovl.op("write", "f", content="upper"), ovl.op("read", "f")]),
    "whiteout": ovl.run([LOWER], [ovl.op("unlink", "f"), ovl.op("stat", "f")]),
    "opaque": ovl.run([LOWER], [ovl.op("unlink", "d/x"), ovl.op("rmdir", "d"), ovl.op("mkdir", "d"),
                                ovl.op("readdir", "d")]),
    "exdev": ovl.run([LOWER], [ovl.op("rename", "d", to="e")], options={"redirect_dir": "off"}),
    "userxattr-metacopy": ovl.run([LOWER], [ovl.op("stat", "f")], options={"userxattr": True, "metacopy": "on"}),
    "lower-whiteout": ovl.run([[{"name": "d", "type": "dir"}, {"name": "d/w", "type": "whiteout"}], LOWER[:1]],
                              [ovl.op("readdir", "d")]),
}
NODE_FIELDS = {"type", "mode", "uid", "gid", "mtime"}
TYPE_FIELDS = {"file": {"content", "nlink"}, "symlink": {"target", "nlink"}, "chardev": {"rdev", "nlink"},
               "fifo": {"nlink"}, "dir": set()}


def _fuse_missing() -> str | None:
    if not which("fuse-overlayfs"):
        return "fuse-overlayfs is not installed (playbooks/site.yml installs it)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this host"
    return None


IMPLEMENTATIONS = ["kernel", pytest.param("fuse-overlayfs", marks=pytest.mark.skipif(
    _fuse_missing() is not None, reason=_fuse_missing() or ""))]


def _fuse_processes(run_id: str) -> list[str]:
    """fuse-overlayfs processes still running on this run's scratch dirs."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path("/proc", pid, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "fuse-overlayfs" in cmdline and f"conformance-{run_id}" in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def _assert_left_nothing(run_id: str) -> None:
    assert leftover_mounts(run_id) == []
    assert [p for p in leftover_paths(run_id) if "-probe-" not in p] == []
    assert _fuse_processes(run_id) == []


def _assert_tree_shape(tree: Mapping[str, Any], *, upper: bool) -> None:
    for path, node in tree.items():
        if node["type"] == "unreachable":
            assert set(node) == {"type", "errno"}, f"{path}: {sorted(node)}"
            continue
        wanted = NODE_FIELDS | TYPE_FIELDS.get(node["type"], {"nlink"}) | ({"xattrs"} if upper else set())
        assert set(node) == wanted, f"{path}: {sorted(node)}"


def _run(implementation: str, run_id: str) -> dict[str, Mapping[str, Any]]:
    [host] = resolve(["local://"])
    client = ProbeClient(host, run_id)
    try:
        observations = client.call(list(SCENARIOS.values()), implementation)
    finally:
        client.remove_bundle()
    for name, seen in zip(SCENARIOS, observations, strict=True):
        assert seen.ok, f"{name}: {seen.error}"
        assert seen.cleanup_problems == (), f"{name}: {seen.cleanup_problems}"
    return {name: seen.data for name, seen in zip(SCENARIOS, observations, strict=True)}


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def answers(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, Mapping[str, Any]]]]:
    """One probe batch per implementation, shared by the shape tests below."""
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts overlay)")
    implementation: str = request.param
    run_id = f"unitovl{implementation.replace('-', '')[:6]}"
    yield implementation, _run(implementation, run_id)
    _assert_left_nothing(run_id)


def test_every_answer_has_the_contract_shape(answers: tuple[str, dict[str, Mapping[str, Any]]]) -> None:
    implementation, seen = answers
    for name, data in seen.items():
        assert {"mount_error", "results", "merged", "upper"} <= set(data), name
        if data["mount_error"]:
            assert (data["results"], data["merged"], data["upper"]) == ([], {}, {}), name
            continue
        assert [set(r) for r in data["results"]] == [{"errno", "value"}] * len(SCENARIOS[name].params["ops"])
        _assert_tree_shape(data["merged"], upper=False)
        _assert_tree_shape(data["upper"], upper=True)
    assert all(not key.startswith(("trusted.", "user.overlay.")) for data in seen.values()
               for node in data["upper"].values() for key in node["xattrs"]), implementation


def test_a_write_copies_the_lower_file_up(answers: tuple[str, dict[str, Mapping[str, Any]]]) -> None:
    implementation, seen = answers
    data = seen["copy-up"]
    assert data["results"] == [{"errno": None, "value": None}, {"errno": None, "value": "upper"}]
    assert data["merged"]["f"]["content"] == data["upper"]["f"]["content"] == "upper"
    if implementation == "kernel":  # origin is a file handle: its bytes are nobody's to predict
        assert data["upper"]["f"]["xattrs"].get("overlay.origin") == "*"


def test_an_unlink_leaves_a_whiteout(answers: tuple[str, dict[str, Mapping[str, Any]]]) -> None:
    _, seen = answers
    data = seen["whiteout"]
    assert data["results"] == [{"errno": None, "value": None}, {"errno": "ENOENT", "value": None}]
    assert "f" not in data["merged"]
    assert data["upper"]["f"]["type"] == "chardev" and data["upper"]["f"]["rdev"] == [0, 0]


def test_rmdir_then_mkdir_makes_an_opaque_dir(answers: tuple[str, dict[str, Mapping[str, Any]]]) -> None:
    implementation, seen = answers
    data = seen["opaque"]
    assert [r["errno"] for r in data["results"]] == [None, None, None, None]
    assert data["upper"]["d"]["xattrs"]["overlay.opaque"] == "y"
    if implementation == "kernel":
        assert data["results"][3]["value"] == [] and not [p for p in data["upper"] if p.startswith("d/")]
    else:  # fuse-overlayfs marks it twice: the xattr and a .wh..wh..opq file, which readdir hides
        assert data["results"][3]["value"] == [] and data["upper"]["d/.wh..wh..opq"]["type"] == "file"


def test_renaming_a_lower_dir_without_redirects_is_exdev(answers: tuple[str, dict[str, Mapping[str, Any]]]) -> None:
    _, seen = answers
    data = seen["exdev"]
    assert data["results"] == [{"errno": "EXDEV", "value": None}]
    assert "d/x" in data["merged"] and "e" not in data["merged"]


def test_userxattr_with_metacopy(answers: tuple[str, dict[str, Mapping[str, Any]]]) -> None:
    """The kernel refuses the pair (fs/overlayfs/params.c); fuse-overlayfs knows neither and says so."""
    implementation, seen = answers
    data = seen["userxattr-metacopy"]
    if implementation == "kernel":
        assert data["mount_error"] == "EINVAL"
    else:
        assert data["mount_error"] is None
        assert set(data["ignored_options"]) == {"userxattr", "metacopy=on"}


def test_a_whiteout_in_an_unmerged_lower_dir(answers: tuple[str, dict[str, Mapping[str, Any]]]) -> None:
    """d exists in the top lower only, so it is not merged: the kernel's readdir is the lower dir's own and
    lists the whiteout, which lookup cannot find; fuse-overlayfs hides it."""
    implementation, seen = answers
    data = seen["lower-whiteout"]
    if implementation == "kernel":
        assert data["results"] == [{"errno": None, "value": ["w"]}]
        assert data["merged"]["d/w"] == {"type": "unreachable", "errno": "ENOENT"}
    else:
        assert data["results"] == [{"errno": None, "value": []}] and "d/w" not in data["merged"]


def _probe(tmp_path: Path, run_id: str, scenario: Scenario, implementation: str) -> subprocess.Popen[bytes]:
    bundle = tmp_path / "probe.pyz"
    bundle.write_bytes(build_bundle())
    request = base64.b64encode(json.dumps({"run_id": run_id, "scenarios": [
        scenario.to_request(0, implementation, None)]}).encode())
    return subprocess.Popen([sys.executable, str(bundle), request.decode()], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


@needs_root()
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_an_op_that_crashes_leaves_nothing_mounted(implementation: str) -> None:
    """truncate without a size raises inside the probe while the overlay is mounted."""
    run_id = f"unitovlcrash{implementation[:4]}"
    [host] = resolve(["local://"])
    client = ProbeClient(host, run_id)
    try:
        [seen] = client.call([ovl.run([LOWER], [ovl.op("write", "f", content="up"), ovl.op("truncate", "f")])],
                             implementation)
    finally:
        client.remove_bundle()
    assert not seen.ok and seen.error and "KeyError" in seen.error["error"], seen.error
    assert seen.cleanup_problems == ()
    _assert_left_nothing(run_id)


@needs_root()
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_signal_mid_scenario_leaves_nothing_mounted(implementation: str, signum: int, tmp_path: Path) -> None:
    """The probe is stopped (the controller's timeout, Ctrl-C) while an op blocks on the merged view."""
    run_id = f"unitovl{signum}{implementation[:4]}"
    probe = _probe(tmp_path, run_id, ovl.run([LOWER], [ovl.op("write", "fifo", content="never read")]),
                   implementation)
    try:
        deadline = time.monotonic() + 30
        while not any(p.endswith("/merged") for p in leftover_mounts(run_id)):
            assert probe.poll() is None, probe.communicate()
            assert time.monotonic() < deadline, "the overlay never got mounted"
            time.sleep(0.02)
        time.sleep(0.2)  # into the blocking open
        probe.send_signal(signum)
        _, stderr = probe.communicate(timeout=30)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    assert probe.returncode == 124, stderr
    _assert_left_nothing(run_id)


def test_ref_gets_the_module_parameters_and_the_fault_behaviour(monkeypatch: pytest.MonkeyPatch) -> None:
    """No mount for "ref": the model gets the scenario, this host's overlay parameters and the named fault."""
    calls: list[dict[str, Any]] = []

    def simulate(params: Mapping[str, Any], *, defaults: Mapping[str, Any], faults: frozenset[str]) -> dict[str, Any]:
        calls.append({"params": params, "defaults": defaults, "faults": faults})
        return {"mount_error": None, "results": [], "merged": {}, "upper": {}}

    monkeypatch.setitem(sys.modules, "conformance.ref.overlay", types.SimpleNamespace(simulate=simulate))
    monkeypatch.setitem(overlay_checks.FAULT_BEHAVIOURS, "OVL-TEST-001", "ignore-whiteouts")
    params = dict(SCENARIOS["whiteout"].params)
    sandbox: Any = None  # the model touches no disk
    assert overlay_checks.overlay_run(params, Context(sandbox, "ref", "OVL-TEST-001"))["mount_error"] is None
    assert overlay_checks.overlay_run(params, Context(sandbox, "ref", None))["results"] == []
    assert [c["faults"] for c in calls] == [frozenset({"ignore-whiteouts"}), frozenset()]
    assert calls[0]["params"] == params
    expected = sorted(os.listdir("/sys/module/overlay/parameters")) if os.path.isdir(
        "/sys/module/overlay/parameters") else []
    assert sorted(calls[0]["defaults"]) == expected


def test_other_implementations_are_not_applicable() -> None:
    sandbox: Any = None
    with pytest.raises(NotApplicable, match="umoci"):
        overlay_checks.overlay_run(dict(SCENARIOS["whiteout"].params), Context(sandbox, "umoci", None))
