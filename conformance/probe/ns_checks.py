"""The "ns.run" action: one busybox container on the runtime under test, watched from the host.

The container reports what it sees on stdout (the script decides what); the probe records what the
host saw around it (its own namespaces, its hostname after the run, whether a mount made inside shows
outside, who owns what the container wrote to /chan). Host objects made for a scenario (sockets, a SysV
shared memory segment, a POSIX message queue, a late mount) are named `conformance-...` and undone by the
sandbox, also after a crash or a signal. See conformance/scenarios/namespaces.py for the contract.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import tarfile
import time
from typing import Any

from conformance import PREFIX
from conformance.probe import syscalls
from conformance.probe.actions import Context, action
from conformance.probe.ns_runners import Container, EngineRunner, runner_for

JsonDict = dict[str, Any]

NS_FILES = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt", "cgroup": "cgroup",
            "user": "user"}
_TIMEOUT = 60.0  # seconds a container may run; a test container does a few reads and exits
_APPLETS = "/bin/busybox"
_MS_BIND, _MS_SHARED = 4096, 1 << 20


@action("ns.run")
def ns_run(params: JsonDict, ctx: Context) -> JsonDict:
    """Build the rootfs and channel, make the host objects, run the container, watch and collect."""
    runner = runner_for(ctx)
    # The sandbox is 0700; a container whose root is host uid 100000 must still reach its rootfs.
    os.chmod(ctx.sandbox.root, 0o711)
    workdir = ctx.sandbox.path("ns")
    os.mkdir(workdir, 0o711)
    rootfs = busybox_rootfs(os.path.join(workdir, "rootfs"))
    chan = os.path.join(workdir, "chan")
    os.mkdir(chan)
    os.chmod(chan, 0o777)  # the container writes here, whatever uid its root has on the host
    os.mkdir(os.path.join(chan, "rootonly"), 0o755)  # owned by host root: a user-namespaced root may not write
    for name in ("inner", "late"):
        os.mkdir(os.path.join(chan, name), 0o777)
    # /chan is a shared mount, as every mount is on a systemd host: a runtime that leaves propagation as
    # it found it then lets mounts cross between the container and the host (mount_namespaces(7)).
    ctx.sandbox.mount(chan, chan, None, _MS_BIND)
    syscalls.mount("none", chan, None, _MS_SHARED, None)
    steps = set(params.get("host") or ())
    _keep_host_names(ctx)
    env = _host_objects(ctx, steps)
    with open(os.path.join(chan, "host.env"), "w", encoding="utf-8") as handle:
        handle.write("".join(f"{key}={value}\n" for key, value in env.items()))
    cid = f"{PREFIX}{ctx.sandbox.run_id}-{os.urandom(3).hex()}"
    box = Container(cid=cid, workdir=workdir, rootfs=rootfs,
                    chan=chan, script=str(params["script"]), namespaces=tuple(params.get("namespaces") or ()),
                    user_ns=params.get("user_ns"), hostname=params.get("hostname"),
                    domainname=params.get("domainname"), readonly_root=bool(params.get("readonly_root")),
                    join=params.get("join"), raw_namespaces=params.get("raw_namespaces"),
                    caps=tuple(params.get("caps") or ()), env={"CONFORMANCE_CID": cid})
    if isinstance(runner, EngineRunner):
        _tar(rootfs, rootfs + ".tar")
    result: JsonDict = {"exit": None, "stdout": "", "stderr": "", "refused": None,
                        "host": {"ns": host_namespaces(), "hostname_before": os.uname().nodename,
                                 "during": {"ready": False, "inner_is_mount": None},
                                 "tcp_port": int(env["TCP_PORT"]) if "TCP_PORT" in env else None}}
    out_path, err_path = os.path.join(workdir, "stdout"), os.path.join(workdir, "stderr")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        child = runner.start(box, out.fileno(), err.fileno())
        try:
            result["exit"] = _watch(child, box, steps, ctx, result["host"]["during"])
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
                runner.stop(box)
    with open(out_path, encoding="utf-8", errors="replace") as handle:
        result["stdout"] = handle.read()
    with open(err_path, encoding="utf-8", errors="replace") as handle:
        result["stderr"] = handle.read()[-4000:]
    result["host"]["hostname"] = os.uname().nodename
    result["host"]["domainname"] = _read("/proc/sys/kernel/domainname").strip()
    result["host"]["files"] = _owners(chan)
    result["host"]["stragglers"] = _stragglers(cid)
    return result


def _stragglers(cid: str) -> int:
    """Processes of the container still alive after it exited (they are killed here: nothing stays).

    pid_namespaces(7): when the init of a namespace exits, the kernel SIGKILLs the rest; that takes a
    moment after the runtime returns, so look again for up to two seconds before counting.
    """
    import signal  # noqa: PLC0415

    deadline = time.monotonic() + 2.0
    while container_processes(cid) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = container_processes(cid)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
    return len(left)


def busybox_rootfs(rootfs: str) -> str:
    """A rootfs of busybox-static and a link per applet, plus the directories runtimes mount on."""
    if not os.path.exists(_APPLETS):
        from conformance.probe.actions import NotApplicable  # noqa: PLC0415

        raise NotApplicable("busybox-static is not installed on this host (/bin/busybox)")
    for name in ("bin", "proc", "sys", "dev", "tmp", "etc", "chan", "mnt", "root"):
        os.makedirs(os.path.join(rootfs, name), 0o755, exist_ok=True)
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    shutil.copy2(_APPLETS, os.path.join(rootfs, "bin", "busybox"))
    applets = subprocess.run([_APPLETS, "--list"], capture_output=True, text=True, timeout=10, check=True).stdout
    for applet in applets.split():
        if applet not in ("busybox", "[[") and "/" not in applet:
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    with open(os.path.join(rootfs, "etc", "passwd"), "w", encoding="utf-8") as handle:
        handle.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    return rootfs


def host_namespaces() -> dict[str, int]:
    """The probe's own namespace inodes (namespaces(7): same inode on the nsfs device, same namespace)."""
    found: dict[str, int] = {}
    for kind, name in NS_FILES.items():
        try:
            found[kind] = os.stat(f"/proc/self/ns/{name}").st_ino
        except OSError:
            continue
    return found


def _watch(child: subprocess.Popen[bytes], box: Container, steps: set[str], ctx: Context, during: JsonDict) -> int:
    """Wait for the container; when it says ready, do the host's part and let it go on."""
    deadline = time.monotonic() + _TIMEOUT
    chan = box.chan
    ready, go = os.path.join(chan, "ready"), os.path.join(chan, "go")
    while child.poll() is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the container ran past {_TIMEOUT:.0f}s")
        if not during["ready"] and os.path.exists(ready):
            during["ready"] = True
            during["inner_is_mount"] = os.path.ismount(os.path.join(chan, "inner"))
            during["init"] = container_init(box.cid)
            if "late-mount" in steps:
                late = os.path.join(chan, "late")
                ctx.sandbox.mount(f"{PREFIX}{ctx.sandbox.run_id}-late", late, "tmpfs", 0, "mode=0755")
                with open(os.path.join(late, "marker"), "w", encoding="utf-8") as handle:
                    handle.write("late\n")
            with open(go, "w", encoding="utf-8"):
                pass
        time.sleep(0.01)
    return int(child.returncode)


def _keep_host_names(ctx: Context) -> None:
    """Put the host's hostname and domainname back after the run if a faulty runtime changed them."""
    names = {path: _read(path) for path in ("/proc/sys/kernel/hostname", "/proc/sys/kernel/domainname")}

    def restore() -> None:
        for path, value in names.items():
            if value and _read(path) != value:
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(value)

    ctx.sandbox.defer("restore the host's hostname and domainname", restore)


def container_processes(cid: str) -> list[int]:
    """Host PIDs of the processes whose environment carries CONFORMANCE_CID=cid (the container's)."""
    marker = f"CONFORMANCE_CID={cid}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    if marker in handle.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
    return sorted(found)


def container_init(cid: str) -> JsonDict:
    """The container's first process as the host sees it: where its root is, which namespaces it has."""
    pids = container_processes(cid)
    if not pids:
        return {}
    pid = min(pids, key=_start_order)  # the oldest: the container's init (its children start later)
    seen: JsonDict = {"pid": pid, "ns": {}}
    try:
        seen["root"] = os.readlink(f"/proc/{pid}/root")
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            uids = next((line.split()[1:] for line in handle if line.startswith("Uid:")), [])
        seen["uid"] = int(uids[0]) if uids else None
        for kind, name in NS_FILES.items():
            seen["ns"][kind] = os.stat(f"/proc/{pid}/ns/{name}").st_ino
    except OSError as exc:
        seen["error"] = str(exc)
    return seen


def _start_order(pid: int) -> tuple[int, int]:
    """When the process started (clock ticks since boot), then its PID: PIDs alone mislead once they wrap."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return int(handle.read().rpartition(")")[2].split()[19]), pid
    except (OSError, IndexError, ValueError):
        return 1 << 62, pid


def _host_objects(ctx: Context, steps: set[str]) -> dict[str, str]:
    """Make what the scenario's host steps ask for; each is undone with the sandbox."""
    env = {"HOST_PID": str(os.getpid())}
    tag = f"{PREFIX}{ctx.sandbox.run_id}-{os.urandom(2).hex()}"
    if "sockets" in steps:
        abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        abstract.bind("\0" + tag)
        abstract.listen(1)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(1)
        ctx.sandbox.defer("close the host's abstract socket", abstract.close)
        ctx.sandbox.defer("close the host's TCP listener", tcp.close)
        env["ABSTRACT"] = "@" + tag
        env["TCP_PORT"] = str(tcp.getsockname()[1])
    if "sysv-shm" in steps:
        env["SHM_KEY"] = str(_shm_segment(ctx))
    if "sysv-msg" in steps:
        env["MSG_KEY"] = str(_msg_queue(ctx))
    if "mqueue" in steps:
        env["MQ_NAME"] = _message_queue(ctx, tag)
    if "host-mark" in steps:  # beside the rootfs, outside anything bound into the container
        env["HOST_MARK"] = f"{tag}-hostmark"
        with open(ctx.sandbox.path(env["HOST_MARK"]), "w", encoding="utf-8") as handle:
            handle.write("the host side of the sandbox\n")
    return env


def _shm_segment(ctx: Context) -> int:
    """A SysV shared memory segment on the host; its key (decimal, as /proc/sysvipc/shm prints it)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    key = 0x434F0000 | (os.getpid() & 0xFFFF)
    ipc_creat, ipc_rmid = 0o1000, 0
    shmid = libc.shmget(key, 4096, ipc_creat | 0o600)
    if shmid < 0:
        raise OSError(ctypes.get_errno(), "shmget failed")

    def remove() -> None:
        libc.shmctl(shmid, ipc_rmid, None)

    ctx.sandbox.defer(f"shmctl IPC_RMID {shmid}", remove)
    return key


def _msg_queue(ctx: Context) -> int:
    """A SysV message queue on the host; its key (decimal, as /proc/sysvipc/msg prints it)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    key = 0x434E0000 | (os.getpid() & 0xFFFF)
    msqid = libc.msgget(key, 0o1000 | 0o600)  # IPC_CREAT
    if msqid < 0:
        raise OSError(ctypes.get_errno(), "msgget failed")

    def remove() -> None:
        libc.msgctl(msqid, 0, None)  # IPC_RMID

    ctx.sandbox.defer(f"msgctl IPC_RMID {msqid}", remove)
    return key


def _message_queue(ctx: Context, tag: str) -> str:
    """A POSIX message queue on the host, named after the run; its name without the leading slash."""
    librt = ctypes.CDLL("librt.so.1", use_errno=True)
    name = ("/" + tag).encode()
    mqd = librt.mq_open(name, os.O_CREAT | os.O_RDWR, 0o600, None)
    if mqd < 0:
        raise OSError(ctypes.get_errno(), "mq_open failed")
    librt.mq_close(mqd)

    def unlink() -> None:
        librt.mq_unlink(name)

    ctx.sandbox.defer(f"mq_unlink /{tag}", unlink)
    return tag


def _tar(rootfs: str, path: str) -> None:
    """The rootfs as a tar for `docker import` / `podman import`."""
    with tarfile.open(path, "w") as tar:
        tar.add(rootfs, arcname=".")


def _owners(chan: str) -> dict[str, dict[str, int]]:
    """Who owns what is in /chan after the run (its top level and rootonly/), as the host sees it."""
    found: dict[str, dict[str, int]] = {}
    for rel in ("", "rootonly"):
        base = os.path.join(chan, rel)
        for name in os.listdir(base):
            st = os.lstat(os.path.join(base, name))
            found[os.path.join(rel, name)] = {"uid": st.st_uid, "gid": st.st_gid}
    return found


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""
