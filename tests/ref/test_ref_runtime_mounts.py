"""The reference runtime's filesystem view: pivot_root, propagation, masked and read-only paths, devices.

Same scheme as test_ref_runtime.py: each test with a faulty variant asserts the observation is right
exactly when the runtime runs without the fault.
"""

from __future__ import annotations

import os
import select
from pathlib import Path

import pytest
from test_ref_runtime import WAIT_FOR_GO, Box, box_fixture, expect, faults, pytestmark  # noqa: F401 (fixture, marks)

from conformance.ref import nsapi
from conformance.ref.defaultspec import MASKED_PATHS, READONLY_PATHS


def _listing_in_mount_namespace(pid: int) -> list[str]:
    """`ls /` as setns(2) into the process's mount namespace shows it: setns puts the caller at that
    namespace's root (with whatever is mounted on top of it), not at the process's chroot."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
            nsapi.setns(fd, nsapi.CLONE_NEWNS)
            os.write(write, "\n".join(sorted(os.listdir("/"))).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert select.select([read], [], [], 10)[0]
        return os.read(read, 65536).decode().split("\n")
    finally:
        os.close(read)
        os.waitpid(child, 0)


@pytest.mark.parametrize("fault", faults("chroot-instead-of-pivot-root", "old-root-left-mounted"))
def test_the_hosts_root_is_gone_from_the_mount_namespace(box: Box, fault: str | None) -> None:
    """pivot_root(2) and a detached old root: the namespace's root is the rootfs, the host's tree unreachable."""
    listing, result = box.while_running(WAIT_FOR_GO, _listing_in_mount_namespace,
                                        faults=frozenset({fault} if fault else ()))
    assert result.status == 0, result
    expect(listing == sorted(os.listdir(box.rootfs)), fault)


@pytest.mark.parametrize("fault", faults("old-root-left-mounted"))
def test_mountinfo_lists_only_the_containers_mounts(box: Box, fault: str | None) -> None:
    """No mount of the host's root filesystem and one "/" in the container's /proc/self/mountinfo."""
    host_root = os.stat("/").st_dev
    result = box.run("cat /proc/self/mountinfo", faults=frozenset({fault} if fault else ()))
    lines = [line.split() for line in result.out.splitlines()]
    devices = {tuple(int(n) for n in fields[2].split(":")) for fields in lines}
    roots = [fields for fields in lines if fields[4] == "/"]
    expect((os.major(host_root), os.minor(host_root)) not in devices and len(roots) == 1, fault)


@pytest.mark.parametrize(("propagation", "fault", "inner_on_host", "late_inside"), [
    (None, None, False, False),
    (None, "propagation-left-shared", True, True),
    ("private", None, False, False),
    ("slave", None, False, True),
])
def test_mounts_cross_between_host_and_container_only_as_configured(
        box: Box, propagation: str | None, fault: str | None, inner_on_host: bool, late_inside: bool) -> None:
    """mount_namespaces(7) over a shared host mount in the rootfs: private by default, slave receives only."""
    shared = box.rootfs / "mnt"
    nsapi.mount("conformance-shared", str(shared), "tmpfs", 0, "mode=0755")
    nsapi.mount("", str(shared), None, nsapi.MS_SHARED)
    for name in ("inner", "late"):
        (shared / name).mkdir()
    box.config["process"]["capabilities"] = None  # root with every capability, to mount inside
    if propagation:
        box.config["linux"]["rootfsPropagation"] = propagation
    script = ("mount -t tmpfs conformance-inner /mnt/inner; " + WAIT_FOR_GO
              + "; grep -c ' /mnt/late ' /proc/self/mountinfo")

    def look(_pid: int) -> bool:
        inner = os.path.ismount(shared / "inner")
        nsapi.mount("conformance-late", str(shared / "late"), "tmpfs", 0, "mode=0755")
        return inner

    inner, result = box.while_running(script, look, faults=frozenset({fault} if fault else ()))
    assert (inner, result.out.split()[-1] != "0") == (inner_on_host, late_inside), result
    expect((inner, result.out.split()[-1] != "0") == (False, propagation == "slave"), fault)


@pytest.mark.parametrize(("propagation", "field"), [("shared", "shared:"), ("unbindable", "unbindable"),
                                                    ("private", None)])
def test_rootfs_propagation_is_the_roots(box: Box, propagation: str, field: str | None) -> None:
    """config-linux.md § Rootfs Mount Propagation: the container's "/" has the propagation asked for."""
    box.config["linux"]["rootfsPropagation"] = propagation
    result = box.run("grep '^[0-9]* [0-9]* [0-9:]* [^ ]* / ' /proc/self/mountinfo")
    fields = result.out.split(" - ")[0].split()[6:]
    assert fields == ([] if field is None else [f for f in fields if f.startswith(field)]), result
    assert field is None or fields


@pytest.mark.parametrize("fault", faults("no-masked-paths"))
def test_masked_paths_cannot_be_read(box: Box, fault: str | None) -> None:
    """config-linux.md § Masked Paths: a file reads as /dev/null, a directory as an empty read-only tmpfs."""
    (box.rootfs / "etc" / "secret").write_text("file-secret\n")
    (box.rootfs / "secrets").mkdir()
    (box.rootfs / "secrets" / "key").write_text("dir-secret\n")
    box.config["linux"]["maskedPaths"] = [*MASKED_PATHS, "/etc/secret", "/secrets", "/no/such/path"]
    result = box.run("cat /etc/secret; ls /secrets; wc -c < /proc/keys; touch /secrets/x 2>&1 || true",
                     faults=frozenset({fault} if fault else ()))
    assert result.status == 0, result
    expect("file-secret" not in result.out and "key" not in result.out and "Read-only" in result.out
           and result.out.split("\n")[0] == "0", fault)


@pytest.mark.parametrize("fault", faults("no-readonly-paths"))
def test_readonly_paths_are_not_writable(box: Box, fault: str | None) -> None:
    """config-linux.md § Readonly Paths: writes fail with EROFS; /proc/sys is mounted read-only."""
    (box.rootfs / "data").mkdir()
    box.config["linux"]["readonlyPaths"] = [*READONLY_PATHS, "/data", "/no/such/path"]
    result = box.run("touch /data/x 2>&1; grep ' /proc/sys ' /proc/self/mountinfo | cut -d' ' -f6",
                     faults=frozenset({fault} if fault else ()))
    assert result.status == 0, result
    expect("Read-only file system" in result.out and result.out.split()[-1].split(",")[0] == "ro", fault)


@pytest.mark.parametrize("fault", faults("readonly-root-ignored"))
def test_root_readonly_makes_every_write_fail(box: Box, fault: str | None) -> None:
    """config.md § Root: readonly true, the root filesystem MUST be read-only inside the container."""
    box.config["root"]["readonly"] = True
    result = box.run("touch /x 2>&1; touch /tmp/x 2>&1; echo ok > /dev/shm/x && cat /dev/shm/x",
                     faults=frozenset({fault} if fault else ()))
    assert result.out.endswith("ok\n"), result
    expect(result.out.count("Read-only file system") == 2 and not (box.rootfs / "x").exists(), fault)


@pytest.mark.parametrize("fault", faults("no-default-mounts"))
def test_default_filesystems_and_devices(box: Box, fault: str | None) -> None:
    """config-linux.md § Default Filesystems and § Default Devices, /dev/ptmx a link to pts/ptmx."""
    script = "cat /proc/self/mountinfo; echo --; ls /dev; readlink /dev/ptmx; echo x > /dev/null; " \
             "head -c 3 /dev/zero | wc -c; head -c 3 /dev/urandom | wc -c"
    result = box.run(script, faults=frozenset({fault} if fault else ()))
    mountinfo, rest = result.out.split("--\n")
    types = {line.split()[4]: line.split(" - ")[1].split()[0] for line in mountinfo.splitlines()}
    expect([types.get(p) for p in ("/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue")] == [
        "proc", "sysfs", "tmpfs", "devpts", "tmpfs", "mqueue"], fault)
    if fault:
        return
    lines = rest.split()
    for name in ("null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "fd", "stdin"):
        assert name in lines, name
    assert lines[-3:] == ["pts/ptmx", "3", "3"]


def test_a_symlink_in_the_rootfs_cannot_send_a_mount_out(box: Box) -> None:
    """A destination through a symlink pointing out of the rootfs is resolved inside it (as RESOLVE_IN_ROOT)."""
    outside = box.root / "outside"
    outside.mkdir()
    os.symlink("../../../outside", box.rootfs / "evil")
    box.config["mounts"].append({"destination": "/evil/m", "type": "tmpfs", "source": "tmpfs"})
    result = box.run("grep -c ' /outside/m ' /proc/self/mountinfo")
    assert result.out.strip() == "1", result
    assert list(outside.iterdir()) == [] and (box.rootfs / "outside" / "m").is_dir()


def test_bind_mounts_take_their_options(box: Box) -> None:
    """A bind mount (source relative to the bundle) made read-only by a remount, as mount(2) needs."""
    (box.bundle / "shared").mkdir()
    (box.bundle / "shared" / "f").write_text("from-host\n")
    box.config["mounts"].append({"destination": "/data", "type": "bind", "source": "shared",
                                 "options": ["rbind", "ro", "nosuid", "rprivate"]})
    result = box.run("cat /data/f; touch /data/x 2>&1; grep ' /data ' /proc/self/mountinfo | cut -d' ' -f6")
    assert result.out.split("\n")[0] == "from-host"
    assert "Read-only file system" in result.out and result.out.split()[-1].startswith("ro,nosuid"), result


def test_nothing_outside_the_container_changes(box: Box) -> None:
    """A run leaves the bundle and the host's mounts as they were (its mounts die with its namespace)."""
    def snapshot(path: Path) -> dict[str, tuple[int, int, int]]:
        return {str(p): (p.lstat().st_mode, p.lstat().st_size, p.lstat().st_mtime_ns) for p in path.rglob("*")
                if p.name != "config.json"}

    box.write("true")
    mounts = box.host_mounts()
    before = snapshot(box.bundle)
    assert box.run("true").status == 0
    assert snapshot(box.bundle) == before
    assert box.host_mounts() == mounts
