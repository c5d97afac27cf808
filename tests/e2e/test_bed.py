"""tools/bed.py: several hosts on this one machine, each with its own address, sshd, host name and private
directories, reached over ssh from the bed's controller namespace; and `down` leaves nothing behind.

The module brings one bed up: three network-namespace hosts (under a second) and the QEMU guest (its
boot, ~25-35 s under TCG, is most of the module's time). The fixture takes it down whatever happened;
the last tests take it down themselves and look for leftovers with their own eyes (not the tool's
leftovers()), also after an `up` killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, conformance_cli, needs_root
from tools import bed as bed_tool
from tools import guest as guest_tool

# One bed per machine (fixed names): keep the module on one xdist worker under --dist loadgroup.
pytestmark = [needs_root(), pytest.mark.slow, pytest.mark.xdist_group("bed")]

NETNS_HOSTS = ("bed-1", "bed-2", "bed-3")
#: Two quick host-area tests that create no cgroup: the run checks plumbing, not the kernel.
FAST_TESTS = "overlay_is_listed or uts_namespace_keeps"


@pytest.fixture(scope="module")
def bed() -> Iterator[bed_tool.Bed]:
    """Three netns hosts and the guest; down in the finalizer, also when a test failed."""
    if guest_tool.read_stamp(guest_tool.DEFAULT_CACHE) is None:
        guest_tool.build()  # once per machine, some minutes; the cache is kept
    made = bed_tool.up(len(NETNS_HOSTS), guest=True)
    try:
        yield made
    finally:
        bed_tool.down()


def _on(bed: bed_tool.Bed, host: str, *argv: str) -> str:
    done = subprocess.run(bed.ssh_argv(host, *argv), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{host}: {argv}: exit {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout.strip()


def _in_controller(bed: bed_tool.Bed, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bed.exec_argv(*argv), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          check=False, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def test_every_host_answers_ssh_with_its_own_name_and_address(bed: bed_tool.Bed) -> None:
    """From the controller namespace each netns host answers as root with host name bed-i at 10.231.0.(10+i)."""
    assert [h.name for h in bed.hosts] == [*NETNS_HOSTS, "guest"]
    for index, name in enumerate(NETNS_HOSTS, start=1):
        lines = _on(bed, name, "sh", "-c", "id -u; hostname; ip -4 -o address show dev eth0; ls /sys/class/net")
        uid, hostname, address, *devices = lines.splitlines()
        assert (uid, hostname) == ("0", name)
        assert f" 10.231.0.{10 + index}/24 " in address, address
        assert sorted(devices) == ["eth0", "lo"]  # its own sysfs: the machine's devices are not there


def test_the_machine_has_no_address_on_the_bed_subnet(bed: bed_tool.Bed) -> None:
    """Only the bed's namespaces have bed addresses: the controller namespace has .1, the machine none."""
    machine = subprocess.run(["ip", "-4", "-o", "address"], capture_output=True, text=True, timeout=30, check=True)
    assert "10.231." not in machine.stdout
    controller = _in_controller(bed, "ip", "-4", "-o", "address", "show", "dev", "eth0")
    assert " 10.231.0.1/24 " in controller.stdout, controller.stdout + controller.stderr


def test_hosts_have_private_suite_dir_and_tmp(bed: bed_tool.Bed) -> None:
    """Each host's /var/lib/conformance-suite and /tmp are tmpfs of its own: what one writes, no other sees."""
    for name in NETNS_HOSTS:
        _on(bed, name, "sh", "-c", f"echo {name} > /var/lib/conformance-suite/owner; echo {name} > /tmp/owner")
    for name in NETNS_HOSTS:
        assert _on(bed, name, "cat", "/var/lib/conformance-suite/owner", "/tmp/owner").split() == [name, name]
        assert _on(bed, name, "stat", "-f", "-c", "%T", "/var/lib/conformance-suite", "/tmp").split() == ["tmpfs"] * 2
    assert not Path("/var/lib/conformance-suite/owner").exists()
    assert not Path("/tmp/owner").exists()


def test_hosts_see_the_machine_cgroup_hierarchies(bed: bed_tool.Bed) -> None:
    """A netns host shares the machine's kernel and cgroups: /sys/fs/cgroup lists the same hierarchies."""
    assert _on(bed, "bed-2", "ls", "/sys/fs/cgroup").split() == sorted(os.listdir("/sys/fs/cgroup"))


def test_inventory_reaches_every_host_with_ansible(bed: bed_tool.Bed) -> None:
    """The inventory up wrote is enough for Ansible: every host of container_hosts answers ping."""
    done = _in_controller(bed, str(ROOT / ".venv" / "bin" / "ansible"), "-i", str(bed.inventory), "container_hosts",
                          "-m", "ansible.builtin.ping", timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in (*NETNS_HOSTS, "guest"):
        assert f"{name} | SUCCESS" in done.stdout, done.stdout[-3000:]


def test_guest_is_a_v2_host_reached_from_the_controller(bed: bed_tool.Bed) -> None:
    """The guest answers on the controller namespace's loopback: its own kernel, pure cgroup v2."""
    guest = bed.host("guest")
    assert (guest.address, guest.netns) == ("127.0.0.1", None)
    assert _on(bed, "guest", "sh", "-c", "hostname; stat -f -c %T /sys/fs/cgroup").split() == [
        "conformance-guest", "cgroup2fs"]


def test_conformance_run_over_two_bed_hosts(bed: bed_tool.Bed, tmp_path: Path) -> None:
    """`conformance run` in the controller namespace checks bed-1 and bed-2 over ssh, one report for both."""
    done = _in_controller(bed, *conformance_cli(), "run", "--hosts", "ssh://bed-1,ssh://bed-2", "--ssh-config",
                          str(bed.ssh_config), "--area", "host", "--report-dir", str(tmp_path), "-n", "2",
                          "--", "-k", FAST_TESTS)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "latest" / "results.json").read_text())
    assert {(h["name"], h["reachable"]) for h in results["hosts"]} == {("bed-1", True), ("bed-2", True)}
    verdicts = {(r["host"], r["clause"]): r["verdict"] for r in results["results"]}
    assert {host for host, _ in verdicts} == {"bed-1", "bed-2"}
    assert set(verdicts.values()) == {"pass"}, verdicts


def test_fleet_report_columns_differ_where_the_hosts_do(bed: bed_tool.Bed, tmp_path: Path) -> None:
    """Controller mode over the bed's inventory: a netns host (this machine's hybrid cgroups, its kernel) and
    the guest (pure v2, Debian's kernel) are two columns of one report, whose headers show how they differ.

    Their verdicts may differ too: the guest is not provisioned, so its kernel lists overlay in
    /proc/filesystems only if something loaded the module (HOST-OVERLAY-001), and the report must say so."""
    guest_has_overlay = "overlay" in _on(bed, "guest", "cat", "/proc/filesystems").split()
    done = _in_controller(bed, *conformance_cli(), "run", "--inventory", str(bed.inventory), "--limit",
                          "bed-1,guest", "--area", "host", "--report-dir", str(tmp_path), "--", "-k", FAST_TESTS)
    assert done.returncode == (0 if guest_has_overlay else 1), done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "latest" / "results.json").read_text())
    verdicts = {(r["host"], r["clause"]): r["verdict"] for r in results["results"]}
    assert verdicts[("bed-1", "HOST-OVERLAY-001")] == "pass"
    assert verdicts[("guest", "HOST-OVERLAY-001")] == ("pass" if guest_has_overlay else "fail")
    facts = {h["name"]: h["facts"] for h in results["hosts"]}
    assert sorted(facts) == ["bed-1", "guest"]
    modes = {name: f["cgroup"]["mode"] for name, f in facts.items()}
    assert modes == {"bed-1": "hybrid" if Path("/sys/fs/cgroup/unified").is_dir() else modes["bed-1"],
                     "guest": "v2"}
    assert modes["bed-1"] != "v2"
    kernels = {name: f["kernel"]["release"] for name, f in facts.items()}
    assert kernels["bed-1"] == os.uname().release != kernels["guest"]
    html = (tmp_path / "latest" / "report.html").read_text()
    for name in ("bed-1", "guest"):
        assert f"cgroup {modes[name]}" in html and kernels[name] in html


def _nothing_left() -> list[str]:
    """What of a bed this machine still has, seen without tools/bed.py's own leftovers()."""
    found = [f"netns {p.name}" for p in Path("/run/netns").glob("conformance-bed-*")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=30, check=True).stdout
    found += [f"link {line}" for line in links.splitlines() if "conformance-" in line]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z" and ("conformance-bed" in cmdline or "conformance-guest-bed-guest" in cmdline):
                found.append(f"process {proc.name}: {cmdline[:200]}")
    found += [f"mount {line}" for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if "conformance-bed" in line]
    found += [f"path {p}" for p in (bed_tool.RUN_DIR, bed_tool.GUEST_RUN_DIR) if p.exists()]
    found += [f"path {p}" for p in Path("/var/tmp").glob("conformance-bed-*")]
    return found


def test_down_leaves_nothing(bed: bed_tool.Bed) -> None:
    """down stops the guest and the sshds, deletes the namespaces (with their veths and bridge) and the run dir."""
    assert bed_tool.down()
    assert _nothing_left() == []
    assert bed_tool.leftovers() == []
    assert bed_tool.down() == []  # idempotent


def test_down_cleans_up_after_a_killed_up() -> None:
    """An `up` killed with SIGKILL once its sshds run leaves namespaces and daemons; down removes them all."""
    up = subprocess.Popen([str(ROOT / "tools" / "bed.py"), "up", "--hosts", "2"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (bed_tool.RUN_DIR / "hosts" / "bed-2" / "sshd.pid").exists():
            assert up.poll() is None, f"up exited ({up.returncode}) before its sshds ran"
            assert time.monotonic() < deadline, "no sshd after 60 s"
            time.sleep(0.01)
        up.send_signal(signal.SIGKILL)
        up.wait(timeout=30)
        assert any(item.startswith("netns conformance-bed-") for item in _nothing_left())
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        bed_tool.down()
    assert _nothing_left() == []
