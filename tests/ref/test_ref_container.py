"""run_image: an image's layers under overlay, one bundle, the reference runtime, and nothing left behind.

The image is busybox-static built by the reference builder (`COPY rootfs/ /`: /bin/busybox and its
applet symlinks, an /etc with a motd and a directory to delete, a 1777 /tmp), so it needs no registry.
Every test that runs a container needs root (mount, namespaces) and the host's /bin/busybox.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ref_build_engines import _docker_archive

from conformance.ref.build import build_image
from conformance.ref.container import RunError, process_for, run_image
from conformance.ref.layout import Layout

BUSYBOX = "/bin/busybox"
APPLETS = ("cat", "echo", "env", "hostname", "id", "ls", "mkdir", "pwd", "rm", "sh", "sleep", "touch", "true")
SCRATCH_PREFIXES = ("conformance-run-", "conformance-oci-archive-", "conformance-docker-archive-")

try:
    from conformance.ref.runtime import run_bundle as _run_bundle  # noqa: F401 (only: is it there)
    NO_RUNTIME = ""
except ImportError as missing:
    NO_RUNTIME = f"the reference runtime cannot be imported: {missing}"
needs_runtime = pytest.mark.skipif(bool(NO_RUNTIME), reason=NO_RUNTIME)
# As the neighbouring tests mark it (tests/ref has no package, so tests.conftest is out of reach).
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, namespaces, mknod of whiteouts)")
pytestmark = [needs_root, needs_runtime,
              pytest.mark.skipif(not os.path.exists(BUSYBOX), reason=f"{BUSYBOX} is missing (busybox-static)")]


def busybox_context(root: Path) -> Path:
    """A build context whose rootfs/ is a tiny busybox system (see the module doc)."""
    context = root / "busybox-context"
    rootfs = context / "rootfs"
    for sub in ("bin", "etc/sub", "tmp"):
        (rootfs / sub).mkdir(parents=True)
    shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", rootfs / "bin" / applet)
    (rootfs / "etc" / "motd").write_text("welcome\n")
    (rootfs / "etc" / "sub" / "old").write_text("old\n")
    (rootfs / "tmp").chmod(0o1777)
    (context / "Containerfile").write_text('FROM scratch\nCOPY rootfs/ /\nCMD ["/bin/sh", "-c", "echo from-cmd"]\n')
    return context


def busybox_image(root: Path) -> str:
    """The busybox image in an OCI layout under root, as `LAYOUT:TAG`."""
    context = busybox_context(root)
    build_image(context / "Containerfile", context, root / "busybox", "bb", compression="none")
    return f"{root / 'busybox'}:bb"


def busybox_layer(image: str) -> bytes:
    """The image's one layer (uncompressed), to load it into docker and podman."""
    path, _, tag = image.rpartition(":")
    layout = Layout(path)
    [layer] = layout.manifest(layout.resolve(tag)).layers
    return layout.read_blob(layer, 1 << 30)


def leftovers() -> set[str]:
    """What a run may leave: its scratch directories and any mount below them."""
    found = {f"{base}/{name}" for base in ("/dev/shm", "/tmp") for name in os.listdir(base)
             if name.startswith(SCRATCH_PREFIXES)}
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        found |= {f"mount {line.split()[4]}" for line in info if "conformance-run-" in line.split()[4]}
    return found


@pytest.fixture
def image(scratch: Path) -> str:
    return busybox_image(scratch)


@pytest.fixture
def clean() -> Iterator[None]:
    """Fails the test when it left a scratch directory or a mount (ones that were there before are ignored)."""
    before = leftovers()
    yield
    assert leftovers() - before == set()


def _run(image: str, argv: list[str], scratch: Path, **options: object) -> tuple[int, str, str]:
    with open(scratch / "out", "w+b") as out, open(scratch / "err", "w+b") as err:
        status = run_image(image, argv, stdout=out.fileno(), stderr=err.fileno(), **options)  # type: ignore[arg-type]
        out.seek(0)
        err.seek(0)
        return status, out.read().decode(), err.read().decode()


def test_exit_status_and_output_are_the_containers(image: str, scratch: Path, clean: None) -> None:
    """The status is the command's; stdout and stderr reach the descriptors given."""
    assert _run(image, ["sh", "-c", "echo out; echo err >&2; exit 7"], scratch) == (7, "out\n", "err\n")


def test_hostname_env_and_workdir(image: str, scratch: Path, clean: None) -> None:
    """--hostname sets the UTS name (and HOSTNAME, as docker does); --env and --workdir win over the image's."""
    status, out, _ = _run(image, ["sh", "-c", "hostname; echo $HOSTNAME $A $HOME; pwd"], scratch,
                          hostname="conformance-box", env=["A=1"], workdir="/made/here")
    assert (status, out) == (0, "conformance-box\nconformance-box 1 /\n/made/here\n")


def test_no_argv_runs_the_images_cmd(image: str, scratch: Path, clean: None) -> None:
    """Without argv the image's Cmd runs (argv replaces Cmd, as in `docker run IMAGE ARGV`)."""
    assert _run(image, [], scratch) == (0, "from-cmd\n", "")


def test_process_follows_docker_for_entrypoint_cmd_and_env() -> None:
    """Entrypoint stays and argv replaces Cmd; a RUN step ignores Entrypoint; --env replaces a variable."""
    config = {"Entrypoint": ["/bin/ep"], "Cmd": ["default"], "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/w",
              "User": "1:2"}
    assert process_for(config, []).args == ("/bin/ep", "default")
    assert process_for(config, ["x"]).args == ("/bin/ep", "x")
    assert process_for(config, ["x"], entrypoint=False).args == ("x",)
    process = process_for(config, [], env=["A=2", "B=3"], workdir="/o")
    assert (process.env, process.cwd, process.user) == (("PATH=/bin", "A=2", "B=3"), "/o", "1:2")
    with pytest.raises(RunError, match="no command"):
        process_for({}, [])


def test_user_namespace_maps_root_to_100000(image: str, scratch: Path, clean: None) -> None:
    """With user_ns the container's uid_map is 0 100000 65536."""
    status, out, _ = _run(image, ["cat", "/proc/self/uid_map", "/proc/self/gid_map"], scratch, user_ns=True)
    assert status == 0
    assert [line.split() for line in out.splitlines()] == [["0", "100000", "65536"]] * 2


def test_keep_upper_is_the_containers_layer(image: str, scratch: Path, clean: None) -> None:
    """keep_upper gets the upper dir as an OCI layer: a whiteout, an opaque directory, a new file, no mount points."""
    status, _, _ = _run(image, ["sh", "-c", "rm /etc/motd && rm -rf /etc/sub && mkdir /etc/sub && echo n > /new"],
                        scratch, keep_upper=str(scratch / "upper.tar"))
    assert status == 0
    with tarfile.open(scratch / "upper.tar") as tar:
        names = sorted(m.name for m in tar)
    # /proc, /sys and /dev were made in the init layer, below the upper: they are no change of the container's
    assert names == ["etc", "etc/.wh.motd", "etc/sub", "etc/sub/.wh..wh..opq", "new"]


def test_docker_archive_images_run_too(image: str, scratch: Path, clean: None) -> None:
    """A `docker save` archive with :tag is an image as well as a layout is."""
    archive = _docker_archive(scratch, busybox_layer(image), "conformance-bb:1")
    assert _run(f"{archive}:conformance-bb:1", ["echo", "archived"], scratch) == (0, "archived\n", "")


def test_nothing_is_left_after_a_failure_or_a_timeout(image: str, scratch: Path, clean: None) -> None:
    """Failing command, missing command, timeout, unusable image: each tears down (the `clean` fixture checks)."""
    assert _run(image, ["sh", "-c", "exit 1"], scratch)[0] == 1
    assert _run(image, ["/no/such/command"], scratch)[0] != 0
    started = time.monotonic()
    assert _run(image, ["sleep", "60"], scratch, timeout=1)[0] == 128 + signal.SIGKILL
    assert time.monotonic() - started < 30
    with pytest.raises(RunError, match="no such layout"):
        run_image(str(scratch / "nowhere"), ["true"])
    with pytest.raises(Exception, match="no manifest named"):
        run_image(f"{image}-missing-tag", ["true"])


def test_a_user_missing_from_passwd_is_refused(image: str, clean: None) -> None:
    """USER naming nobody in the image's /etc/passwd is an error (as in docker), and it still tears down."""
    path = image.rpartition(":")[0]
    layout = Layout(path)
    _, manifest, config = layout.image("bb")
    layout.add_image("baduser", list(zip(manifest.layers, config.diff_ids, strict=True)),
                     config={"User": "nobody-here", "Cmd": ["true"]})
    with pytest.raises(RunError, match="unable to find user nobody-here"):
        run_image(f"{path}:baduser", [])


def _cli(*args: str, **options: object) -> subprocess.Popen[str]:
    script = Path(sys.executable).with_name("conformance")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "conformance"]
    return subprocess.Popen([*command, "ref", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **options)  # type: ignore[call-overload]


def test_cli_exit_status_is_the_containers(image: str, clean: None) -> None:
    """`conformance ref run IMAGE -- CMD` prints what the container prints and exits with its status."""
    done = _cli("--hostname", "h1", "--env", "A=b", "--workdir", "/w", image, "--", "sh", "-c",
                "echo $A $(hostname) $(pwd); exit 5")
    out, err = done.communicate(timeout=120)
    assert (done.returncode, out) == (5, "b h1 /w\n"), err


def test_cli_unusable_image_is_one_line_and_exit_2(scratch: Path, clean: None) -> None:
    """An image that is not there: one line naming it, exit 2."""
    done = _cli(str(scratch / "nowhere"), "--", "true")
    _, err = done.communicate(timeout=60)
    assert done.returncode == 2
    assert len(err.strip().splitlines()) == 1 and "nowhere" in err, err


def test_cli_ctrl_c_tears_down(image: str, clean: None) -> None:
    """SIGINT while the container runs: the command ends and leaves no mount and no scratch directory."""
    before = leftovers()
    done = _cli(image, "--", "sleep", "60", start_new_session=True)
    deadline = time.monotonic() + 60
    while not any(item.startswith("mount ") for item in leftovers() - before):
        assert time.monotonic() < deadline and done.poll() is None, "the container never came up"
        time.sleep(0.05)
    time.sleep(0.5)  # let the runtime reach the wait for its child
    os.killpg(done.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    done.communicate(timeout=60)
    assert done.returncode != 0


def test_an_empty_layer_is_written_for_no_change(image: str, scratch: Path, clean: None) -> None:
    """A container that changes nothing gives a layer with no entries."""
    assert _run(image, ["true"], scratch, keep_upper=str(scratch / "none.tar"))[0] == 0
    with tarfile.open(fileobj=io.BytesIO((scratch / "none.tar").read_bytes())) as tar:
        assert tar.getnames() == []
