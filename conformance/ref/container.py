"""Run a command in a container made from an image, as `docker run --rm` does: layers, overlay, bundle, runtime.

`run_image(image, argv)` takes an OCI layout `DIR[:TAG]` or a `docker save` / OCI archive `TAR[:TAG]`,
and for that one run:

1. mounts a tmpfs on a fresh `conformance-run-<hex>` directory under /dev/shm (else /tmp), made
   private so nothing mounted below it propagates to other mount namespaces;
2. unpacks the image's layers there with the reference layer store (store.py: one overlay-format
   directory per layer, whiteouts as 0/0 devices, opaque directories by xattr);
3. makes an *init layer*, as Docker's overlay2 driver does (moby daemon/initlayer): the mount points
   the runtime needs (`/proc`, `/sys`, `/dev`...) that the image lacks are created in a layer of their
   own between the image and the container, so they never show up among the container's changes;
4. mounts the overlay, lowers = init + the image's layers (top first), upper and work fresh, on
   `bundle/rootfs`, and writes `bundle/config.json` from `runspec.default_config` with the process
   the image config and argv give (`process_for`);
5. calls `runtime.run_bundle` and returns its status (128+N for a signal N); with `resources` (the
   OCI linux.resources, e.g. from docker-like flags through runflags.resources_from_flags) the
   container gets a cgroup at /<container id> with those limits, which the runtime removes after;
6. always tears it down, also on an exception or Ctrl-C (SIGINT and SIGTERM are held back while it
   does): every mount under the directory, deepest first (lazily if busy), then the tmpfs and the
   directory itself.

`Sandbox` is the same, step by step, for callers that need the container's upper directory: the
builder (build.py) runs a RUN step on its current rootfs and turns the upper into the step's layer
with `commit.upper_to_layer`, times set to SOURCE_DATE_EPOCH first (`Sandbox.commit`).

The overlay is mounted with `redirect_dir=off,metacopy=off`: a renamed directory is then copied up
whole and a chmod copies the data, so the upper dir always holds a complete changeset that
upper_to_layer can export (Docker's overlay2 falls back to a slow "naive diff" when either is on).

Needs root (mount, mknod of whiteouts, trusted.* xattrs). Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.ref import nsapi
from conformance.ref.archives import archive_as_layout
from conformance.ref.commit import upper_to_layer
from conformance.ref.errors import RefError, UnsafePathError
from conformance.ref.layout import Layout
from conformance.ref.runflags import resources_from_flags as resources_from_flags  # noqa: PLC0414 (re-exported)
from conformance.ref.store import Store
from conformance.ref.tarsafe import Root, clean_name

PREFIX = "conformance-run-"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: `--user-ns`: container ids 0..65535 are host ids 100000..165535 (the usual /etc/subuid range).
USER_NS_MAP = (0, 100000, 65536)
#: What the overlay mount must not do, so that the upper dir is a complete changeset (module doc).
OVERLAY_OPTIONS = "redirect_dir=off,metacopy=off"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ID_MAX = 2**31 - 2  # runc's user.maxID: the largest id a uid_map can name


class RunError(RefError):
    """A container cannot be made or run: no command, an unknown user, a mount refused, not root."""


@dataclass(frozen=True, slots=True)
class Process:
    """What the container runs, as the image config and the caller name it (user not yet resolved)."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: str  # as written in the config: "", "uid", "uid:gid", "name", "name:group"


@dataclass(frozen=True, slots=True)
class ExecUser:
    """A user resolved against the rootfs's /etc/passwd and /etc/group, as runc's GetExecUser does."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    home: str


def process_for(config: Mapping[str, Any], argv: Sequence[str], *, env: Sequence[str] | None = None,
                workdir: str | None = None, entrypoint: bool = True) -> Process:
    """The process Docker would run for an image config (config.md `config`) and a command line.

    argv replaces Cmd and is appended to Entrypoint (`docker run IMAGE ARGV`); without
    `entrypoint` (a RUN step: Docker's builder overrides it) argv alone runs. `env` items (`K=V`)
    replace the image's variables of the same name; PATH is added when neither sets it.
    """
    front = [str(a) for a in config.get("Entrypoint") or []] if entrypoint else []
    args = [*front, *(argv or [str(a) for a in config.get("Cmd") or []])]
    if not args:
        raise RunError("no command: the image has no Entrypoint or Cmd, and none was given")
    variables: dict[str, str] = {}
    for item in [*(str(e) for e in config.get("Env") or []), *(env or [])]:
        name, sep, value = item.partition("=")
        if not name or not sep:
            raise RunError(f"environment item {item!r} is not NAME=value")
        variables.pop(name, None)  # a replaced variable moves to the end, as Docker's ReplaceOrAppendEnvValues
        variables[name] = value
    if "PATH" not in variables:
        variables = {"PATH": DEFAULT_PATH.partition("=")[2], **variables}
    cwd = workdir or str(config.get("WorkingDir") or "/")
    if not cwd.startswith("/"):
        raise RunError(f"working directory {cwd!r} is not absolute")
    return Process(tuple(args), tuple(f"{k}={v}" for k, v in variables.items()), cwd, str(config.get("User") or ""))


def run_image(image_ref: str, argv: Sequence[str], *, hostname: str | None = None, user_ns: bool = False,
              env: Sequence[str] | None = None, workdir: str | None = None, stdin: int | None = None,
              stdout: int | None = None, stderr: int | None = None, timeout: float | None = None,
              keep_upper: str | os.PathLike[str] | None = None, resources: Mapping[str, Any] | None = None,
              cgroups_path: str | None = None) -> int:
    """Run `argv` (or the image's Entrypoint/Cmd) in a fresh container of `image_ref`; its exit status.

    `image_ref` is an OCI layout `DIR[:TAG]` or an archive `TAR[:TAG]`. The streams are file
    descriptors (None: inherited). `keep_upper` is a file that receives the container's changes as
    an uncompressed OCI layer tar (commit.upper_to_layer, times as the container left them), written
    before the teardown. With `user_ns` the container gets a user namespace mapping 0 to 100000
    (65536 ids); the image's files are not shifted, so inside they belong to `nobody` and only
    world-writable places are writable. `resources` (OCI linux.resources) give the container a cgroup
    at `cgroups_path`, by default /<container id> (`conformance-run-<hex>`).
    """
    with Sandbox.create() as box:
        config = box.unpack(image_ref)
        box.mount()
        status = box.run(process_for(config, argv, env=env, workdir=workdir), hostname=hostname, user_ns=user_ns,
                         stdin=stdin, stdout=stdout, stderr=stderr, timeout=timeout, resources=resources,
                         cgroups_path=cgroups_path)
        if keep_upper is not None:
            Path(keep_upper).write_bytes(box.commit())
        return status


def run_layer(rootfs: str | os.PathLike[str], config: Mapping[str, Any], argv: Sequence[str], *,
              epoch: int | None, stdout: int | None = None, stderr: int | None = None) -> tuple[int, bytes | None]:
    """Run a build step on `rootfs` (left untouched: it is the overlay's only image layer).

    Returns the exit status and, when it is 0, the step's layer from the upper dir (times set to
    `epoch` first when given). As Docker's builder does: ENTRYPOINT is not used, stdin is empty,
    and the network namespace has no interface but a down loopback.
    """
    with Sandbox.create() as box, open(os.devnull, "rb") as null:
        box.mount([rootfs])
        status = box.run(process_for(config, argv, entrypoint=False), stdin=null.fileno(), stdout=stdout,
                         stderr=stderr)
        return status, (box.commit(epoch=epoch) if status == 0 else None)


class Sandbox:
    """One container's scratch tmpfs: the layer store, init layer, upper, work and bundle/rootfs below it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name  # also the container id: `conformance-run-<hex>`, for `conformance clean`
        self.bundle = path / "bundle"
        self.rootfs = self.bundle / "rootfs"
        self.upper = path / "upper"
        self.lowers: list[Path] = []
        self.mounted = False

    @classmethod
    @contextlib.contextmanager
    def create(cls) -> Iterator[Sandbox]:
        """A fresh sandbox, torn down on exit whatever happened (see the module doc)."""
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
        path = Path(base) / f"{PREFIX}{secrets.token_hex(6)}"
        path.mkdir(mode=0o711)
        try:
            # 0711: with a user namespace the runtime walks to bundle/rootfs as the mapped root.
            _mount("tmpfs", str(path), "tmpfs", 0, "mode=0711")
            _mount("none", str(path), None, nsapi.MS_PRIVATE, None)
            yield cls(path)
        finally:
            with _signals_held():
                _teardown(path)

    def unpack(self, image_ref: str) -> dict[str, Any]:
        """Unpack the image's layers into the sandbox's own store; returns the image config's `config`."""
        path, ref = split_image_ref(image_ref)
        if not os.path.exists(path):
            raise RunError(f"image {path}: no such layout directory or archive")
        with contextlib.ExitStack() as stack:
            if os.path.isfile(path):
                path, ref = stack.enter_context(archive_as_layout(path, ref))
            layout = Layout(path)
            image = Store(self.path / "conformance-store").unpack(layout, ref)
            config = dict(layout.image(ref)[2].document.get("config") or {})
        self.lowers = [layer.path for layer in reversed(image.layers)]
        return config

    def mount(self, lowers: Sequence[str | os.PathLike[str]] | None = None) -> Path:
        """Mount the container's overlay on bundle/rootfs: init layer, then `lowers` (top first)."""
        image = [Path(p) for p in lowers] if lowers is not None else self.lowers
        init = self.path / "init"
        for sub in (init, self.upper, self.path / "work", self.path / "init-work", self.rootfs):
            sub.mkdir(parents=True, mode=0o755)
        links = self.path / "l"  # short names keep many layers under mount(2)'s one page of options
        links.mkdir()
        names = []
        for n, lower in enumerate(image or [self.path / "empty"]):
            Path(lower).mkdir(exist_ok=True)  # an image with no layers: overlayfs needs a lower
            os.symlink(lower, links / str(n))
            names.append(str(links / str(n)))
        # First the init layer, Docker's way: the image mounted with `init` as its upper, the missing
        # mount points made through it, unmounted. The bundle's mounts say which points are needed.
        self._overlay(names, init, self.path / "init-work")
        try:
            _make_mount_points(self.rootfs, _mount_points(self._config(("true",), None, False)))
        finally:
            _umount(str(self.rootfs))
        self._overlay([str(init), *names], self.upper, self.path / "work")
        self.mounted = True
        return self.rootfs

    def _overlay(self, lowers: Sequence[str], upper: Path, work: Path) -> None:
        options = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work},{OVERLAY_OPTIONS}"
        _mount("overlay", str(self.rootfs), "overlay", 0, options)

    def run(self, process: Process, *, hostname: str | None = None, user_ns: bool = False,
            stdin: int | None = None, stdout: int | None = None, stderr: int | None = None,
            timeout: float | None = None, resources: Mapping[str, Any] | None = None,
            cgroups_path: str | None = None) -> int:
        """Write the bundle for `process` and run it with the reference runtime; its exit status.

        With `resources` the container gets a cgroup at `cgroups_path` (default /<sandbox name>).
        """
        try:
            from conformance.ref.runtime import run_bundle  # noqa: PLC0415 (the runtime is only needed here)
        except ImportError as err:
            raise RunError(f"the reference runtime is missing: {err}") from err

        if not self.mounted:
            raise RunError("the sandbox's overlay is not mounted; call mount() first")
        user = resolve_user(self.rootfs, process.user)
        env = list(process.env)
        names = {item.partition("=")[0] for item in env}
        if hostname is not None and "HOSTNAME" not in names:
            env.append(f"HOSTNAME={hostname}")  # Docker sets it; runc leaves the environment alone
        if "HOME" not in names:
            env.append(f"HOME={user.home}")  # as runc's init does when HOME is unset
        _make_dirs(self.rootfs, process.cwd)  # Docker makes the working directory, in the container's layer
        config = self._config(process.args, hostname, user_ns)
        config["process"].update({"terminal": False, "env": env, "cwd": process.cwd,
                                  "user": {"uid": user.uid, "gid": user.gid,
                                           **({"additionalGids": list(user.additional_gids)}
                                              if user.additional_gids else {})}})
        if resources or cgroups_path:
            linux = config["linux"]
            linux["resources"] = {**(linux.get("resources") or {}), **(resources or {})}
            linux["cgroupsPath"] = cgroups_path or f"/{self.name}"
        (self.bundle / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        try:
            return run_bundle(str(self.bundle), self.name, stdin=stdin, stdout=stdout, stderr=stderr,
                              timeout=timeout)
        except RefError:
            raise
        except Exception as err:  # whatever the runtime raises is a run that did not happen: one line, the cause kept
            raise RunError(f"the runtime could not run the container: {type(err).__name__}: {err}") from err

    def _config(self, args: Sequence[str], hostname: str | None, user_ns: bool) -> dict[str, Any]:
        from conformance.ref.runspec import default_config  # noqa: PLC0415

        # The maps add the user namespace, for uids and gids alike (defaultspec.py).
        config = default_config(list(args), hostname=hostname, user_ns_maps=[USER_NS_MAP] if user_ns else None)
        config["root"] = {"path": "rootfs", "readonly": False}
        return config

    def commit(self, *, epoch: int | None = None) -> bytes:
        """The container's changes as an OCI layer; unmounts first, so the upper is stable when read.

        With `epoch`, every time in the upper is set to it first, as the builder sets every time in
        its trees (a container's files carry the time they were written).
        """
        if self.mounted:
            _umount(str(self.rootfs))
            self.mounted = False
        if epoch is not None:
            times = (epoch * 10**9, epoch * 10**9)
            for top, dirs, files in os.walk(self.upper):
                for name in (*dirs, *files):
                    os.utime(os.path.join(top, name), ns=times, follow_symlinks=False)
        return upper_to_layer(self.upper)


def split_image_ref(spec: str) -> tuple[str, str | None]:
    """`path[:tag]`: the shortest prefix before a colon that exists is the path (tags may hold colons).

    The same rule as `conformance ref inspect` (explore/inspect.py parse_image), which ref cannot import.
    """
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    for at in (n for n, char in enumerate(spec) if char == ":"):
        if os.path.exists(spec[:at]):
            return spec[:at], spec[at + 1:] or None
    path, tag = spec.rsplit(":", 1)
    return path, tag or None


# Users ----------------------------------------------------------------------------------------------


def resolve_user(rootfs: str | os.PathLike[str], spec: str) -> ExecUser:
    """`user[:group]` against the rootfs's /etc/passwd and /etc/group (libcontainer user.GetExecUser).

    A number with no passwd entry is taken as it is (gid 0 unless given); a name that is not in
    passwd is an error, as in Docker; supplementary groups come from /etc/group when the user was
    named by its entry and no group was given.
    """
    passwd = [line.split(":") for line in _read_etc(rootfs, "passwd")]
    groups = [line.split(":") for line in _read_etc(rootfs, "group")]
    user_arg, _, group_arg = spec.partition(":")
    uid, gid, home, matched = 0, 0, "/", ""
    entries = [e for e in passwd if len(e) >= 7 and _numeric(e[2]) is not None and _numeric(e[3]) is not None]
    wanted = [e for e in entries if (int(e[2]) == 0 if not user_arg else
                                     int(e[2]) == _numeric(user_arg) if _numeric(user_arg) is not None else
                                     e[0] == user_arg)]
    if wanted:
        matched, uid, gid, home = wanted[0][0], int(wanted[0][2]), int(wanted[0][3]), wanted[0][5]
    elif user_arg:
        number = _numeric(user_arg)
        if number is None:
            raise RunError(f"unable to find user {user_arg}: no matching entries in the image's /etc/passwd")
        uid = number
    extra: tuple[int, ...] = ()
    valid = [g for g in groups if len(g) >= 4 and _numeric(g[2]) is not None]
    if group_arg:
        number = _numeric(group_arg)
        named = [g for g in valid if (int(g[2]) == number if number is not None else g[0] == group_arg)]
        if named:
            gid = int(named[0][2])
        elif number is None:
            raise RunError(f"unable to find group {group_arg}: no matching entries in the image's /etc/group")
        else:
            gid = number
    elif matched:
        extra = tuple(int(g[2]) for g in valid if matched in g[3].split(","))
    if not (0 <= uid <= _ID_MAX and 0 <= gid <= _ID_MAX):
        raise RunError(f"user {spec!r}: ids must be between 0 and {_ID_MAX}")
    return ExecUser(uid, gid, extra, home or "/")


def _numeric(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _read_etc(rootfs: str | os.PathLike[str], name: str) -> list[str]:
    """The lines of /etc/<name> inside rootfs, reached without following a symlink out of it."""
    try:
        with Root(rootfs) as root:
            etc = root.open_dir(("etc",), create=False)
            if etc is None:
                return []
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=etc)
    except (OSError, UnsafePathError):  # missing, a symlink, not a file: no entries, as libcontainer does
        return []
    with open(fd, encoding="utf-8", errors="surrogateescape") as text:
        return [line.rstrip("\n") for line in text if line.strip() and not line.startswith("#")]


# Mount points and directories -------------------------------------------------------------------------


def _mount_points(config: Mapping[str, Any]) -> list[tuple[tuple[str, ...], bool]]:
    """(path, is a file) of each mount destination in a bundle config, in order."""
    points = []
    for mount in config.get("mounts") or []:
        parts = clean_name(str(mount.get("destination", "")))
        source = str(mount.get("source", ""))
        is_file = "bind" in (mount.get("type"), *(mount.get("options") or [])) and os.path.isfile(source)
        if parts:
            points.append((parts, is_file))
    return points


def _make_mount_points(rootfs: Path, points: Sequence[tuple[tuple[str, ...], bool]]) -> None:
    """Make each missing mount point (a directory, or an empty file for a file bind) inside rootfs.

    A point behind a symlink that leaves the rootfs is left for the runtime to refuse.
    """
    with Root(rootfs) as root:
        for parts, is_file in points:
            try:
                parent = root.open_dir(parts[:-1], create=True)
            except UnsafePathError:
                continue
            if parent is None:
                continue
            with contextlib.suppress(FileExistsError):
                if is_file:
                    os.close(os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     0o644, dir_fd=parent))
                else:
                    os.mkdir(parts[-1], 0o755, dir_fd=parent)


def _make_dirs(rootfs: Path, path: str) -> None:
    try:
        with Root(rootfs) as root:
            root.open_dir(clean_name(path), create=True)
    except UnsafePathError as err:
        raise RunError(f"working directory {path}: {err}") from None


# mount(2), umount2(2) and the teardown ----------------------------------------------------------------


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    """mount(2) through the runtime's wrapper, with a message a person can act on."""
    try:
        nsapi.mount(source, target, fstype, flags, data)
    except OSError as err:
        hint = " (needs root: CAP_SYS_ADMIN)" if err.errno == errno.EPERM else ""
        raise RunError(f"mount {fstype or 'propagation'} on {target}: {os.strerror(err.errno or 0)}{hint}") from None


def _umount(target: str) -> None:
    """Unmount; lazily when still busy (a process left in the container); nothing when not mounted."""
    for flags in (0, nsapi.MNT_DETACH):
        try:
            nsapi.umount(target, flags)
            return
        except OSError as err:
            if err.errno in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point (any more)
                return
            if err.errno != errno.EBUSY or flags:
                raise RunError(f"umount {target}: {os.strerror(err.errno or 0)}") from None


def mounts_under(path: str | os.PathLike[str]) -> list[str]:
    """Mount points at or below `path`, most recent first (from /proc/self/mountinfo)."""
    top = os.fspath(path).rstrip("/")
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split(" ")
            if len(fields) > 4:
                target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                if target == top or target.startswith(top + "/"):
                    found.append(target)
    return found[::-1]


def _teardown(path: Path) -> None:
    """Unmount everything at or below `path` (the overlay, then the tmpfs), then remove the directory.

    Unmounting the tmpfs frees all that was in it; a directory left with something in it (the tmpfs
    could not be mounted) is removed too, never following a symlink out.
    """
    errors = []
    for target in mounts_under(path):
        try:
            _umount(target)
        except RunError as err:
            errors.append(str(err))
    if mounts_under(path):
        raise RunError(f"still mounted, not removing {path}: {mounts_under(path)}; {'; '.join(errors)}")
    _remove_tree(path)


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for top, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(top, name))
        for name in dirs:
            child = os.path.join(top, name)
            if os.path.islink(child) or not stat.S_ISDIR(os.lstat(child).st_mode):
                os.unlink(child)
            else:
                os.rmdir(child)
    os.rmdir(path)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, so a second Ctrl-C cannot cut a teardown short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
