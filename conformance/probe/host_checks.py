"""Host readiness scenarios: does this kernel offer overlay, namespaces, seccomp and cgroup limits.

Each action does the real thing (a real mount, a real unshare, a real cgroup write) and reports what
it saw. Where a faulty variant is asked for (context.fault names the clause), the action does what a
plausibly broken implementation would do, so the project's own tests can show each clause's test
catches it.
"""

from __future__ import annotations

import os
import socket
import stat
from typing import Any

from conformance import PREFIX
from conformance.probe import cgroupfs, syscalls
from conformance.probe.actions import Context, action
from conformance.probe.sandbox import error_dict, held_child, in_child

JsonDict = dict[str, Any]


def _read_tree(base: str) -> JsonDict:
    """Name -> {type, content or rdev} for every entry directly under base."""
    tree: JsonDict = {}
    for name in sorted(os.listdir(base)):
        st = os.lstat(os.path.join(base, name))
        if stat.S_ISREG(st.st_mode):
            with open(os.path.join(base, name), encoding="utf-8", errors="replace") as handle:
                tree[name] = {"type": "file", "content": handle.read()}
        elif stat.S_ISCHR(st.st_mode):
            tree[name] = {"type": "char", "rdev": [os.major(st.st_rdev), os.minor(st.st_rdev)]}
        elif stat.S_ISDIR(st.st_mode):
            tree[name] = {"type": "dir"}
        else:
            tree[name] = {"type": "other"}
    return tree


@action("host.filesystems")
def filesystems(_params: JsonDict, ctx: Context) -> JsonDict:
    """The filesystem types the kernel offers, from /proc/filesystems."""
    with open("/proc/filesystems", encoding="utf-8") as handle:
        types = [line.split()[-1] for line in handle if line.strip()]
    if ctx.faulty("HOST-OVERLAY-001"):
        types = [t for t in types if t != "overlay"]  # a kernel built without CONFIG_OVERLAY_FS
    return {"types": types}


def _overlay(ctx: Context, layers: dict[str, dict[str, str]], lowers: list[str], extra: str = "") -> JsonDict:
    """Write the layer trees, mount overlay over them; returns the mount's paths or the mount error."""
    for name, files in layers.items():
        os.mkdir(ctx.sandbox.path(name))
        ctx.sandbox.write_tree(ctx.sandbox.path(name), files)
    for name in ("work", "merged"):
        os.mkdir(ctx.sandbox.path(name))
    options = "lowerdir={},upperdir={},workdir={}{}".format(
        ":".join(ctx.sandbox.path(x) for x in lowers), ctx.sandbox.path("upper"), ctx.sandbox.path("work"), extra
    )
    try:
        ctx.sandbox.mount(f"{PREFIX}{ctx.sandbox.run_id}", ctx.sandbox.path("merged"), "overlay", 0, options)
    except OSError as exc:
        return {"mounted": False, "options": options, **error_dict(exc)}
    return {"mounted": True, "options": options}


@action("host.overlay_merge")
def overlay_merge(params: JsonDict, ctx: Context) -> JsonDict:
    """Mount the given layers (lowers top first) and read the merged view."""
    layers: dict[str, dict[str, str]] = params["layers"]
    lowers: list[str] = list(params["lowers"])
    if ctx.faulty("HOST-OVERLAY-002"):
        lowers = lowers[:1]  # a driver that passes only the first lower dir
    result = _overlay(ctx, layers, lowers)
    if result["mounted"]:
        result["merged"] = _read_tree(ctx.sandbox.path("merged"))
    return result


@action("host.overlay_copy_up")
def overlay_copy_up(params: JsonDict, ctx: Context) -> JsonDict:
    """Overwrite a lower file through the merged view, then look at upper and lower."""
    name, content = params["name"], params["content"]
    result = _overlay(ctx, {"lower": {name: params["old"]}, "upper": {}}, ["lower"])
    if not result["mounted"]:
        return result
    target = ctx.sandbox.path("lower" if ctx.faulty("HOST-OVERLAY-003") else "merged", name)
    with open(target, "w", encoding="utf-8") as handle:  # the faulty variant writes through to the lower
        handle.write(content)
    result.update(
        merged=_read_tree(ctx.sandbox.path("merged")),
        upper=_read_tree(ctx.sandbox.path("upper")),
        lower=_read_tree(ctx.sandbox.path("lower")),
    )
    return result


@action("host.overlay_whiteout")
def overlay_whiteout(params: JsonDict, ctx: Context) -> JsonDict:
    """Unlink a lower file through the merged view, then look at merged and upper."""
    name = params["name"]
    result = _overlay(ctx, {"lower": {name: "lower", "kept": "lower"}, "upper": {}}, ["lower"])
    if not result["mounted"]:
        return result
    # The faulty variant deletes from the lower layer instead, as a naive union tool would.
    os.unlink(ctx.sandbox.path("lower" if ctx.faulty("HOST-OVERLAY-004") else "merged", name))
    result.update(merged=_read_tree(ctx.sandbox.path("merged")), upper=_read_tree(ctx.sandbox.path("upper")))
    return result


def _map_ids(uid_map: str, gid_map: str) -> None:
    with open("/proc/self/setgroups", "w", encoding="ascii") as handle:
        handle.write("deny")
    for path, mapping in (("/proc/self/uid_map", uid_map), ("/proc/self/gid_map", gid_map)):
        with open(path, "w", encoding="ascii") as handle:
            handle.write(mapping)


def _drop_to(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    # Changing uid clears the dumpable flag, which makes /proc/self/* root-owned; a rootless engine
    # writing its own uid_map is dumpable, so restore it.
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 1)


@action("host.overlay_userns")
def overlay_userns(params: JsonDict, ctx: Context) -> JsonDict:
    """As an unprivileged user in a new user+mount namespace, mount overlay with userxattr."""
    uid = int(params.get("uid", 65534))
    base = ctx.sandbox.path("userns")
    os.mkdir(base)
    os.chmod(ctx.sandbox.root, 0o711)
    os.chown(base, uid, uid)
    options = "userxattr"
    if ctx.faulty("HOST-OVERLAY-005"):
        options += ",metacopy=on"  # fs/overlayfs/params.c: "conflicting options: userxattr,metacopy=on", EINVAL

    def work() -> JsonDict:
        _drop_to(uid)
        syscalls.unshare(syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNS)
        _map_ids(f"0 {uid} 1", f"0 {uid} 1")
        syscalls.mount("none", "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        syscalls.mount(f"{PREFIX}userns", base, "tmpfs")
        for sub in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(base, sub))
        with open(os.path.join(base, "lower", "f"), "w", encoding="utf-8") as handle:
            handle.write("lower")
        data = f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work,{options}"
        try:
            syscalls.mount(f"{PREFIX}userns", os.path.join(base, "merged"), "overlay", 0, data)
        except OSError as exc:
            return {"mounted": False, "options": data, **error_dict(exc)}
        with open(os.path.join(base, "merged", "f"), "a", encoding="utf-8") as handle:
            handle.write("+upper")
        return {
            "mounted": True,
            "options": data,
            "uid_inside": os.getuid(),
            "merged": _read_tree(os.path.join(base, "merged")),
            "upper": _read_tree(os.path.join(base, "upper")),
        }

    return in_child(work)


#: The clause each namespace type's readiness check serves (and whose faulty variant skips the unshare).
NAMESPACE_CLAUSES = {
    "mnt": "HOST-NS-MOUNT-001", "uts": "HOST-NS-UTS-001", "ipc": "HOST-NS-IPC-001", "pid": "HOST-NS-PID-001",
    "net": "HOST-NS-NET-001", "user": "HOST-NS-USER-001", "cgroup": "HOST-NS-CGROUP-001", "time": "HOST-NS-TIME-001",
}


def _ns_inode(name: str, pid: str = "self") -> int:
    return os.stat(f"/proc/{pid}/ns/{name}").st_ino


@action("host.namespace")
def namespace(params: JsonDict, ctx: Context) -> JsonDict:
    """Create one namespace type in a child and report what changed for it."""
    kind: str = params["type"]
    flag = syscalls.NAMESPACE_FLAGS[kind]
    skip = ctx.faulty(NAMESPACE_CLAUSES[kind])
    # pid and time apply to children: the caller's own /proc/self/ns/{pid,time} never changes.
    link = f"{kind}_for_children" if kind in ("pid", "time") else kind
    try:
        before = _ns_inode(link)
    except OSError as exc:
        return {"supported": False, **error_dict(exc)}
    hostname_before = socket.gethostname()

    def work() -> JsonDict:
        if not skip:
            syscalls.unshare(flag)
        # pid_for_children reads ENOENT until the new namespace has a first process: ask that process.
        seen: JsonDict = {} if kind == "pid" else {"inode_after": _ns_inode(link)}
        if kind == "uts" and not skip:
            syscalls.sethostname(params.get("hostname", f"{PREFIX}uts"))
        if kind == "uts":
            seen["hostname_inside"] = socket.gethostname()
        if kind == "net":
            seen["interfaces"] = sorted(name for _index, name in socket.if_nameindex())
        if kind == "cgroup":
            with open("/proc/self/cgroup", encoding="utf-8") as handle:
                seen["cgroup_paths"] = sorted({line.rstrip("\n").split(":", 2)[2] for line in handle})
        if kind == "pid":
            first = in_child(lambda: {"pid": os.getpid(), "inode": _ns_inode("pid")})
            seen.update(first_child_pid=first.get("pid"), inode_after=first.get("inode"))
        return seen

    seen = in_child(work)
    return {"supported": "child_error" not in seen, "inode_before": before, "hostname_after": socket.gethostname(),
            "hostname_before": hostname_before, **seen}


@action("host.userns_unprivileged")
def userns_unprivileged(params: JsonDict, ctx: Context) -> JsonDict:
    """Drop to an unprivileged uid, create a user namespace, map ourselves to root in it."""
    uid = int(params.get("uid", 65534))
    with open("/proc/sys/user/max_user_namespaces", encoding="ascii") as handle:
        limit = int(handle.read())

    def work() -> JsonDict:
        _drop_to(uid)
        syscalls.unshare(syscalls.CLONE_NEWUSER)
        mapped = 0 if ctx.faulty("HOST-USERNS-001") else uid  # the fault maps host root: not allowed
        _map_ids(f"0 {mapped} 1", f"0 {mapped} 1")
        return {"uid_inside": os.getuid(), "gid_inside": os.getgid()}

    return {"max_user_namespaces": limit, "uid": uid, **in_child(work)}


@action("host.pivot_root")
def pivot_root(_params: JsonDict, ctx: Context) -> JsonDict:
    """In a new mount namespace, pivot into a fresh tmpfs and look for the old root."""
    new_root = ctx.sandbox.path("newroot")
    os.mkdir(new_root)
    host_marker = ctx.sandbox.path("host-marker")
    with open(host_marker, "w", encoding="utf-8") as handle:
        handle.write("host")

    def work() -> JsonDict:
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount("none", "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        syscalls.mount(f"{PREFIX}pivot", new_root, "tmpfs")
        os.mkdir(os.path.join(new_root, "old"))
        with open(os.path.join(new_root, "MARKER"), "w", encoding="utf-8") as handle:
            handle.write("new root")
        os.chdir(new_root)
        syscalls.pivot_root(".", "old")
        os.chdir("/")
        if not ctx.faulty("HOST-PIVOT-001"):  # the fault forgets to detach the old root
            syscalls.umount("/old", syscalls.MNT_DETACH)
            os.rmdir("/old")
        reachable = [p for p in (host_marker, "/old" + host_marker) if os.path.exists(p)]
        return {"root_entries": sorted(os.listdir("/")), "host_paths_reachable": reachable}

    return {"host_marker": host_marker, **in_child(work)}


@action("host.seccomp")
def seccomp(_params: JsonDict, ctx: Context) -> JsonDict:
    """Install an allow-all seccomp filter in a child and read back its seccomp mode."""

    def work() -> JsonDict:
        status = os.open("/proc/self/status", os.O_RDONLY)
        if ctx.faulty("HOST-SECCOMP-001"):
            syscalls.seccomp_strict()  # strict mode instead of a filter: the kernel says mode 1, or kills us
        else:
            syscalls.seccomp_allow_all()
        text = os.read(status, 65536).decode()
        mode = next((line.split()[1] for line in text.splitlines() if line.startswith("Seccomp:")), None)
        return {"seccomp_mode": mode}

    return in_child(work, timeout=10)


def _hierarchies(ctx: Context, fault_clause: str) -> list[cgroupfs.Hierarchy]:
    root = "/sys/fs/cgroups" if ctx.faulty(fault_clause) else cgroupfs.CGROUP_ROOT
    return cgroupfs.hierarchies(root=root)


@action("host.cgroup_mounts")
def cgroup_mounts(_params: JsonDict, ctx: Context) -> JsonDict:
    """The cgroup hierarchies mounted under /sys/fs/cgroup and the layout they make."""
    found = _hierarchies(ctx, "HOST-CGROUP-001")
    unified = next((h for h in _hierarchies(ctx, "HOST-CGROUP-007") if h.mountpoint == cgroupfs.CGROUP_ROOT
                    and h.version == 2), None)
    return {
        "mode": cgroupfs.mode(found),
        "hierarchies": [{"version": h.version, "mountpoint": h.mountpoint, "controllers": list(h.controllers)}
                        for h in found],
        "unified_at_root": unified is not None,
        "unified_controllers": list(unified.controllers) if unified else [],
    }


def _last_cpu(spec: str) -> str:
    last = spec.rsplit(",", maxsplit=1)[-1]
    return last.split("-")[-1]


@action("host.cgroup_limit")
def cgroup_limit(params: JsonDict, ctx: Context) -> JsonDict:
    """Create a cgroup, write one controller's limit, read it back."""
    controller: str = params["controller"]
    found = cgroupfs.hierarchies()
    h = cgroupfs.hierarchy_for(controller, found)
    if h is None:
        return {"available": False, "mode": cgroupfs.mode(found)}
    cgroupfs.enable_controller(h, controller, ctx.sandbox)
    path = cgroupfs.make_cgroup(h, f"{PREFIX}{ctx.sandbox.run_id}-{controller}", ctx.sandbox)
    requested: dict[str, str] = dict(params.get("values", {}).get(str(h.version), {}))
    if controller == "cpuset":
        parent = "cpuset.cpus.effective" if h.version == 2 else "cpuset.cpus"
        requested = {"cpuset.cpus": _last_cpu(cgroupfs.read(os.path.join(h.mountpoint, parent)))}
    writes = dict(requested)
    if ctx.faulty("HOST-CGROUP-002"):
        writes = {k: str(int(v) // 1024) for k, v in writes.items()}  # a manager that writes KiB, not bytes
    if ctx.faulty("HOST-CGROUP-003"):
        writes = {k: "max" for k in writes}  # a manager that drops the limit
    if ctx.faulty("HOST-CGROUP-004"):
        values = list(writes.values())
        writes = dict(zip(writes, reversed(values), strict=True)) if len(values) > 1 else {
            k: " ".join(reversed(v.split())) for k, v in writes.items()}  # quota and period swapped
    if ctx.faulty("HOST-CGROUP-005"):
        writes = {}  # a manager that forgets the cpuset
    errors: JsonDict = {}
    for name, value in writes.items():
        try:
            cgroupfs.write(os.path.join(path, name), value)
        except OSError as exc:
            errors[name] = error_dict(exc)
    read_back = {name: cgroupfs.read(os.path.join(path, name)) for name in requested}
    return {"available": True, "mode": cgroupfs.mode(found), "version": h.version, "cgroup": path,
            "requested": requested, "read": read_back, "write_errors": errors}


@action("host.cgroup_procs")
def cgroup_procs(params: JsonDict, ctx: Context) -> JsonDict:
    """Move a live child into a new cgroup through cgroup.procs and read /proc/PID/cgroup."""
    found = cgroupfs.hierarchies()
    h = cgroupfs.hierarchy_for(params.get("controller", "pids"), found) or next(iter(found), None)
    if h is None:
        return {"available": False, "mode": cgroupfs.mode(found)}
    name = f"{PREFIX}{ctx.sandbox.run_id}-procs"
    path = cgroupfs.make_cgroup(h, name, ctx.sandbox)
    with held_child() as pid:
        target = h.mountpoint if ctx.faulty("HOST-CGROUP-006") else path  # the fault writes to the parent
        cgroupfs.write(os.path.join(target, "cgroup.procs"), str(pid))
        seen = cgroupfs.cgroup_of(pid, h)
        members = cgroupfs.read(os.path.join(path, "cgroup.procs")).split()
    return {"available": True, "mode": cgroupfs.mode(found), "version": h.version, "expected": "/" + name,
            "seen": seen, "member": str(pid) in members}
