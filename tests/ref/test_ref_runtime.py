"""The reference runtime's namespaces: each one new (or joined), each faulty variant caught.

Every test runs a busybox container from a fresh bundle on its own tmpfs (the `box` fixture) and reads
what the container printed. A test that has a faulty variant runs once as the runtime should behave and
once per fault that must break it, and asserts the observation is right exactly when there is no fault:
so each FAULTS entry makes a test here, or in test_ref_runtime_mounts.py, see something wrong.

The helpers (Box, the box fixture, processes_in, ...) are shared with test_ref_runtime_mounts.py and
test_ref_runtime_lifecycle.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conformance.ref import nsapi
from conformance.ref.errors import RefError
from conformance.ref.runspec import default_config
from conformance.ref.runtime import FAULTS, run_bundle
from conformance.scenarios.namespaces import FALLBACK_TUNNELS
from tests.conftest import needs_root

BUSYBOX = "/bin/busybox"
NS_FILES = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt", "cgroup": "cgroup",
            "user": "user"}
T = TypeVar("T")

pytestmark = [needs_root(), pytest.mark.skipif(not os.path.exists(BUSYBOX), reason=f"{BUSYBOX} (busybox-static) "
                                               "is missing")]


@dataclass(frozen=True)
class Result:
    """What a container run gave: its status and output, or the ContainerError that stopped it."""

    status: int | None
    out: str
    err: str
    error: RefError | None = None  # ContainerError, or ConfigError


@dataclass
class Box:
    """A bundle (config.json + busybox rootfs) on a private tmpfs, and what a test needs to run it."""

    root: Path
    config: dict[str, Any]
    marker: str  # in the container's environment, so the host can find its processes
    runs: list[str] = field(default_factory=list)

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def rootfs(self) -> Path:
        return self.root / "bundle" / "rootfs"

    def write(self, script: str | None = None) -> None:
        """Write config.json, with `sh -c script` as the process when given."""
        if script is not None:
            self.config["process"]["args"] = ["/bin/sh", "-c", script]
        (self.bundle / "config.json").write_text(json.dumps(self.config, indent=1))

    def run(self, script: str | None = None, *, faults: frozenset[str] = frozenset(), timeout: float = 30.0) -> Result:
        """Run the container to its end; output from files outside the bundle."""
        self.write(script)
        cid = f"conformance-test-{len(self.runs)}"
        self.runs.append(cid)
        out, err = self.root / "io" / f"{cid}.out", self.root / "io" / f"{cid}.err"
        with open(os.devnull, "rb") as stdin, open(out, "wb") as stdout, open(err, "wb") as stderr:
            try:
                status = run_bundle(str(self.bundle), cid, faults=faults, stdin=stdin.fileno(),
                                    stdout=stdout.fileno(), stderr=stderr.fileno(), timeout=timeout)
            except RefError as error:
                return Result(None, out.read_text(), err.read_text(), error)
        return Result(status, out.read_text(), err.read_text())

    def host_mounts(self) -> list[str]:
        """The host's mounts at or below this box (other tests may mount and unmount elsewhere meanwhile)."""
        return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(self.root) in line]

    def while_running(self, script: str, look: Callable[[int], T], *, faults: frozenset[str] = frozenset()
                      ) -> tuple[T, Result]:
        """Run `script`, which prints "ready" and then waits for /go; call look(host PID of init) meanwhile."""
        results: list[Result] = []
        runner = threading.Thread(target=lambda: results.append(self.run(script, faults=faults)))
        cid = f"conformance-test-{len(self.runs)}"
        go = self.rootfs / "go"
        runner.start()
        try:
            out = self.root / "io" / f"{cid}.out"
            deadline = time.monotonic() + 20
            while not (out.exists() and "ready" in out.read_text()):
                assert runner.is_alive(), f"the container ended before it was ready: {results}"
                assert time.monotonic() < deadline, "the container never said ready"
                time.sleep(0.01)
            seen = look(container_init(self.marker))
        finally:
            go.touch()
            runner.join(30)
            go.unlink()
        return seen, results[0]


WAIT_FOR_GO = "echo ready; while [ ! -e /go ]; do sleep 0.02; done"


def busybox_rootfs(rootfs: Path) -> None:
    """busybox-static with a link per applet, and the directories a runtime mounts on."""
    for sub in ("bin", "proc", "sys", "dev", "tmp", "etc", "mnt", "root"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet not in ("busybox", "[[") and "/" not in applet:
            os.symlink("busybox", rootfs / "bin" / applet)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")


@pytest.fixture(name="box")
def box_fixture() -> Iterator[Box]:
    """A fresh bundle on a tmpfs under /dev/shm; unmounted and removed afterwards, stray processes killed."""
    root = Path(tempfile.mkdtemp(prefix="conformance-", dir="/dev/shm"))
    nsapi.mount("conformance-test", str(root), "tmpfs", nsapi.MS_NOSUID, "mode=0755")
    try:
        (root / "io").mkdir()
        busybox_rootfs(root / "bundle" / "rootfs")
        marker = f"CONFORMANCE_TEST={root.name}"
        config = default_config(["true"], hostname="conformance-box")
        config["process"]["env"].append(marker)
        yield Box(root, config, marker)
    finally:
        for pid in processes_with(f"CONFORMANCE_TEST={root.name}"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        nsapi.umount(str(root), nsapi.MNT_DETACH)
        root.rmdir()


# Looking from the host -----------------------------------------------------------------------------------


def ns_inode(kind: str, pid: str | int = "self") -> int:
    """The namespace's inode: equal inodes, same namespace (namespaces(7))."""
    return os.stat(f"/proc/{pid}/ns/{NS_FILES.get(kind, kind)}").st_ino


def processes_with(marker: str) -> list[int]:
    """Host PIDs of processes with `marker` in their environment."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.append(int(entry))
    return found


def processes_in(pid_ns: int) -> list[int]:
    """Host PIDs of the processes in the PID namespace with inode `pid_ns`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if ns_inode("pid", entry) == pid_ns:
                    found.append(int(entry))
    return found


def container_init(marker: str) -> int:
    """The container's first process: the oldest with the marker (field 22 of /proc/PID/stat, its start time)."""
    def started(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])

    pids = processes_with(marker)
    assert pids, f"no process with {marker}"
    return min(pids, key=started)


def inode_of(readlink: str) -> int:
    """`net:[4026531840]` -> 4026531840."""
    return int(readlink.strip().split("[")[1].rstrip("]"))


def expect(right: bool, fault: str | None) -> None:
    """Right without a fault, wrong with one: the test has teeth for that fault."""
    assert fault in (None, *FAULTS)
    assert right == (fault is None), "the faulty runtime went unnoticed" if fault else "the runtime is wrong"


def faults(*names: str) -> list[str | None]:
    """Parameters: no fault, then each named one."""
    return [None, *names]


# Namespaces ----------------------------------------------------------------------------------------------

NS_FAULTS = {"pid": "no-pid-namespace", "network": "shared-net-namespace", "ipc": "shared-ipc-namespace",
             "uts": "shared-uts-namespace", "cgroup": "no-cgroup-namespace"}


@pytest.mark.parametrize("fault", faults(*NS_FAULTS.values()))
def test_each_listed_namespace_is_new(box: Box, fault: str | None) -> None:
    """A type without path MUST get a new namespace (config-linux.md); the faulty one keeps the host's."""
    kinds = ("pid", "network", "ipc", "uts", "mount", "cgroup")
    script = "; ".join(f"readlink /proc/self/ns/{NS_FILES[kind]}" for kind in kinds)
    result = box.run(script, faults=frozenset({fault} if fault else ()))
    assert result.status == 0, result
    seen = dict(zip(kinds, map(inode_of, result.out.split()), strict=True))
    for kind in kinds:
        shared = seen[kind] == ns_inode(kind)
        wanted = fault is not None and NS_FAULTS.get(kind) == fault
        assert shared == wanted, f"{kind}: {'shared' if shared else 'new'} with {fault}"
    expect(not any(seen[kind] == ns_inode(kind) for kind in kinds), fault)


@pytest.mark.parametrize("fault", faults("unlisted-namespaces-created"))
def test_a_type_not_listed_is_inherited(box: Box, fault: str | None) -> None:
    """A type absent from linux.namespaces MUST stay the runtime's (config-linux.md § Namespaces)."""
    box.config["linux"]["namespaces"] = [{"type": "mount"}, {"type": "pid"}]
    del box.config["hostname"]
    result = box.run("readlink /proc/self/ns/net; readlink /proc/self/ns/uts",
                     faults=frozenset({fault} if fault else ()))
    expect([inode_of(line) for line in result.out.split()] == [ns_inode("network"), ns_inode("uts")], fault)


@pytest.mark.parametrize("fault", faults("duplicate-namespaces-accepted"))
def test_a_namespace_type_listed_twice_is_refused(box: Box, fault: str | None) -> None:
    """config-linux.md: duplicated namespace types MUST be an error (runtime-tools NSErrorOnDup)."""
    box.config["linux"]["namespaces"].append({"type": "uts"})
    result = box.run("echo ran", faults=frozenset({fault} if fault else ()))
    expect(result.out == "" and result.error is not None and "listed twice" in str(result.error), fault)


@pytest.mark.parametrize("fault", faults("no-pid-namespace"))
def test_the_process_is_pid_1_and_sees_only_its_namespace(box: Box, fault: str | None) -> None:
    """pid_namespaces(7): the first process is PID 1, its parent is outside (0), /proc lists only the container."""
    result = box.run("echo $$; grep PPid /proc/1/status; ls /proc | grep -c '^[0-9]'",
                     faults=frozenset({fault} if fault else ()))
    pid, ppid, count = result.out.split("\n")[:3]
    expect(pid == "1" and ppid.split() == ["PPid:", "0"] and int(count) <= 4, fault)


@pytest.mark.parametrize("fault", faults("shared-uts-namespace"))
def test_hostname_and_domainname_are_the_containers_only(box: Box, fault: str | None) -> None:
    """config.md § Hostname, § Domainname: set in the container's UTS namespace; the host's stay."""
    host = (os.uname().nodename, Path("/proc/sys/kernel/domainname").read_text())
    box.config["domainname"] = "conformance-domain"
    result = box.run("hostname; cat /proc/sys/kernel/domainname", faults=frozenset({fault} if fault else ()))
    assert (os.uname().nodename, Path("/proc/sys/kernel/domainname").read_text()) == host
    expect(result.out.split() == ["conformance-box", "conformance-domain"], fault)


@pytest.mark.parametrize("fault", faults("shared-ipc-namespace"))
def test_sysv_ipc_of_the_host_is_invisible(box: Box, fault: str | None) -> None:
    """ipc_namespaces(7): a SysV shared memory segment of the host is not in the container's /proc/sysvipc/shm."""
    libc = nsapi.LIBC
    key = 0x0C0FFEE0 + os.getpid() % 1000
    shmid = libc.shmget(ctypes.c_int(key), ctypes.c_size_t(4096), ctypes.c_int(0o1000 | 0o600))  # IPC_CREAT
    assert shmid >= 0
    try:
        result = box.run("cat /proc/sysvipc/shm", faults=frozenset({fault} if fault else ()))
    finally:
        assert libc.shmctl(ctypes.c_int(shmid), ctypes.c_int(0), None) == 0  # IPC_RMID
    keys = [int(line.split()[0]) for line in result.out.splitlines()[1:]]
    expect(key not in keys, fault)


@pytest.mark.parametrize("fault", faults("shared-ipc-namespace"))
def test_an_ipc_sysctl_is_the_containers_only(box: Box, fault: str | None) -> None:
    """config-linux.md § Sysctl, in the container's IPC namespace: kernel.shmmax there, the host's unchanged."""
    host = Path("/proc/sys/kernel/shmmax").read_text()
    box.config["linux"]["sysctl"] = {"kernel.shmmax": "12345678"}
    result = box.run("cat /proc/sys/kernel/shmmax", faults=frozenset({fault} if fault else ()))
    assert Path("/proc/sys/kernel/shmmax").read_text() == host
    expect(result.out.strip() == "12345678", fault)


@pytest.mark.parametrize("fault", faults("shared-net-namespace"))
def test_a_new_network_namespace_has_only_loopback(box: Box, fault: str | None) -> None:
    """network_namespaces(7): a new network namespace has only lo."""
    result = box.run("tail -n +3 /proc/net/dev | cut -d: -f1", faults=frozenset({fault} if fault else ()))
    expect([name for name in result.out.split() if name not in FALLBACK_TUNNELS] == ["lo"], fault)


@pytest.mark.parametrize("fault", faults("no-cgroup-namespace"))
def test_the_cgroup_namespace_roots_the_containers_cgroups(box: Box, fault: str | None) -> None:
    """cgroup_namespaces(7): the container's cgroups read as "/" (the runtime's were the namespace's root)."""
    if all(line.endswith(":/") for line in Path("/proc/self/cgroup").read_text().split()):
        pytest.skip("every cgroup of this process is a root: a shared namespace would read the same")
    result = box.run("cat /proc/self/cgroup", faults=frozenset({fault} if fault else ()))
    expect(all(line.endswith(":/") for line in result.out.split()), fault)


@pytest.mark.parametrize("fault", faults("no-uid-map"))
def test_user_namespace_has_the_configured_maps(box: Box, fault: str | None) -> None:
    """config-linux.md § User namespace mappings: uid_map/gid_map as configured; root's files are host uid 100000."""
    box.config = default_config(["true"], user_ns_maps=[(0, 100000, 65536)])
    os.chmod(box.root / "io", 0o777)  # the container's root is host uid 100000
    (box.rootfs / "chan").mkdir(mode=0o777)
    (box.rootfs / "chan").chmod(0o777)
    result = box.run("cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /chan/made",
                     faults=frozenset({fault} if fault else ()))
    lines = [line.split() for line in result.out.splitlines()]
    made = box.rootfs / "chan" / "made"
    right = lines == [["0", "100000", "65536"]] * 2 + [["0"]] and made.stat().st_uid == 100000
    if fault:
        assert result.error is not None and "mapped" in str(result.error)
    expect(right, fault)


def test_maps_the_kernel_refuses_are_a_container_error(box: Box) -> None:
    """user_namespaces(7): overlapping ranges are EINVAL; the error names the map file, nothing runs."""
    box.config = default_config(["true"], user_ns_maps=[(0, 100000, 10), (5, 200000, 10)])
    result = box.run("echo ran")
    assert result.out == "" and result.error is not None and "uid_map" in str(result.error), result
    assert processes_with(box.marker) == []


@pytest.mark.skipif(not os.path.exists("/proc/self/ns/time"), reason="no time namespaces (Linux < 5.6)")
def test_a_time_namespace_gets_its_offsets(box: Box) -> None:
    """config-linux.md § Offset for Time Namespace: monotonic and boottime offsets, before the process starts."""
    box.config["linux"]["namespaces"].append({"type": "time"})
    box.config["linux"]["timeOffsets"] = {"monotonic": {"secs": 7881, "nanosecs": 2718281},
                                          "boottime": {"secs": 1337, "nanosecs": 3141519}}
    result = box.run("readlink /proc/self/ns/time; cat /proc/self/timens_offsets")
    lines = result.out.splitlines()
    assert inode_of(lines[0]) != ns_inode("time") and sorted(line.split() for line in lines[1:]) == [
        ["boottime", "1337", "3141519"], ["monotonic", "7881", "2718281"]], result


@pytest.mark.parametrize("fault", faults("namespace-path-ignored"))
def test_a_namespace_path_is_joined(box: Box, fault: str | None) -> None:
    """config-linux.md: with a path the process MUST be placed in that namespace (here a UTS one, by /proc)."""
    ready, done = os.pipe()
    holder = os.fork()
    if holder == 0:
        try:
            nsapi.unshare(nsapi.CLONE_NEWUTS)
            nsapi.sethostname("conformance-joined")
            os.write(done, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    try:
        assert os.read(ready, 1) == b"x"
        del box.config["hostname"]
        box.config["linux"]["namespaces"] = [n for n in box.config["linux"]["namespaces"] if n["type"] != "uts"]
        box.config["linux"]["namespaces"].append({"type": "uts", "path": f"/proc/{holder}/ns/uts"})
        result = box.run("readlink /proc/self/ns/uts; hostname", faults=frozenset({fault} if fault else ()))
        inode, name = result.out.split()
        expect((inode_of(inode), name) == (ns_inode("uts", holder), "conformance-joined"), fault)
    finally:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
        os.close(ready)
        os.close(done)


@pytest.mark.parametrize("fault", faults("namespace-type-unchecked"))
def test_a_namespace_path_of_another_type_is_refused(box: Box, fault: str | None) -> None:
    """config-linux.md: a path to a namespace of another type MUST be an error (runtime-tools linux_ns_path_type)."""
    box.config["linux"]["namespaces"] = [{"type": "ipc", "path": "/proc/self/ns/net"} if n["type"] == "ipc" else n
                                         for n in box.config["linux"]["namespaces"]]
    result = box.run("echo ran", faults=frozenset({fault} if fault else ()))
    expect(result.out == "" and "is a network namespace, not ipc" in str(result.error), fault)


def test_every_fault_has_a_test_here() -> None:
    """Each FAULTS entry is named in these modules' parametrized tests (which then assert it is caught)."""
    here = Path(__file__).parent
    sources = "".join(path.read_text() for pattern in ("test_ref_runtime*.py", "test_ref_cgroups*.py")
                      for path in here.glob(pattern))
    assert [name for name in FAULTS if f'"{name}"' not in sources] == []
