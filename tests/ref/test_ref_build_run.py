"""RUN in the reference builder, against `docker build` (classic builder) and `podman build`, layer by layer.

One busybox base (tests/ref/test_ref_container.py), one Containerfile of RUN steps: a new directory and
file, a deleted file (a whiteout), a directory deleted and made again (an opaque directory), a RUN that
reads ENV and WORKDIR, the exec form, and a RUN under USER. Each engine's layers above the base are
compared as file trees with the helpers of test_ref_build_engines.py: names, types, modes, owners,
contents and link targets, never times. Where an engine legitimately differs, the test normalises it
and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ref_build_engines import Tree, _docker_archive, _saved_layers, _tree
from test_ref_container import BUSYBOX, busybox_image, busybox_layer, leftovers, needs_root, needs_runtime

from conformance.probe.appliers import NotApplicable, docker_cli, podman_argv
from conformance.ref.build import build_image
from conformance.ref.errors import BuildError
from conformance.ref.layout import Layout

pytestmark = [needs_root, needs_runtime,
              pytest.mark.skipif(not os.path.exists(BUSYBOX), reason=f"{BUSYBOX} is missing (busybox-static)")]

STEPS = """\
RUN mkdir -p /app && echo hi > /app/greeting
RUN rm /etc/motd
RUN rm -rf /etc/sub && mkdir /etc/sub && touch /etc/sub/new
ENV GREETING=hello
WORKDIR /srv/app
RUN echo "$GREETING from $(pwd)" > note
RUN ["/bin/touch", "/tmp/exec-form"]
USER 1000:1000
RUN touch /tmp/mine
"""

#: The steps that make a layer in the reference builder (and in Docker's classic builder), in order.
LAYERED = ["RUN mkdir -p /app && echo hi > /app/greeting", "RUN rm /etc/motd",
           "RUN rm -rf /etc/sub && mkdir /etc/sub && touch /etc/sub/new", "WORKDIR /srv/app",
           'RUN echo "$GREETING from $(pwd)" > note', 'RUN ["/bin/touch", "/tmp/exec-form"]', "RUN touch /tmp/mine"]


def _ref_build(root: Path, steps: str = STEPS, **options: object) -> tuple[list[Tree], list[str], Layout]:
    """Build FROM the busybox layout; the trees of the layers above the base, and the steps that made them."""
    image = busybox_image(root) if not (root / "busybox").exists() else f"{root / 'busybox'}:bb"
    context = root / "run-context"
    context.mkdir(exist_ok=True)
    (context / "Containerfile").write_text(f"FROM oci:{image}\n{steps}")
    result = build_image(context / "Containerfile", context, root / "run-layout", "run", **options)  # type: ignore[arg-type]
    layout = Layout(root / "run-layout")
    manifest = layout.manifest(layout.resolve("run"))
    trees = [_tree(layout.read_blob(layer, 1 << 30)) for layer in manifest.layers[1:]]
    return trees, [step.instruction for step in result.steps if step.layer is not None], layout


def _run(argv: list[str], env: dict[str, str], timeout: int = 300) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert done.returncode == 0, f"{argv} exited {done.returncode}: {done.stderr[-2000:]}"


def _expected_ref_trees() -> list[Tree]:
    """What each layer holds, written out once: the engines are compared with the reference after it."""
    d, f = "5", "0"
    return [
        {"app": (d, 0o755, 0, 0, ""), "app/greeting": (f, 0o644, 0, 0, "98ea6e4f216f")},
        {"etc": (d, 0o755, 0, 0, ""), "etc/.wh.motd": (f, 0o600, 0, 0, "e3b0c44298fc")},
        {"etc": (d, 0o755, 0, 0, ""), "etc/sub": (d, 0o755, 0, 0, ""),
         "etc/sub/.wh..wh..opq": (f, 0o755, 0, 0, "e3b0c44298fc"), "etc/sub/new": (f, 0o644, 0, 0, "e3b0c44298fc")},
        {"srv": (d, 0o755, 0, 0, ""), "srv/app": (d, 0o755, 0, 0, "")},
        {"srv": (d, 0o755, 0, 0, ""), "srv/app": (d, 0o755, 0, 0, ""),
         "srv/app/note": (f, 0o644, 0, 0, "2c591649f45c")},
        {"tmp": (d, 0o1777, 0, 0, ""), "tmp/exec-form": (f, 0o644, 0, 0, "e3b0c44298fc")},
        {"tmp": (d, 0o1777, 0, 0, ""), "tmp/mine": (f, 0o644, 1000, 1000, "e3b0c44298fc")},
    ]


def test_run_layers_hold_the_containers_changes(scratch: Path) -> None:
    """Each RUN layer is its container's upper dir: new files, a whiteout, an opaque directory, ENV/WORKDIR/USER."""
    before = leftovers()
    trees, instructions, layout = _ref_build(scratch)
    assert instructions == LAYERED
    assert trees == _expected_ref_trees()
    assert leftovers() - before == set()
    config = layout.config(layout.manifest(layout.resolve("run"))).document
    assert [h["created_by"] for h in config["history"][-9:]] == [
        "/bin/sh -c mkdir -p /app && echo hi > /app/greeting", "/bin/sh -c rm /etc/motd",
        "/bin/sh -c rm -rf /etc/sub && mkdir /etc/sub && touch /etc/sub/new", "ENV GREETING=hello",
        "WORKDIR /srv/app", '/bin/sh -c echo "$GREETING from $(pwd)" > note', "/bin/touch /tmp/exec-form",
        "USER 1000:1000", "/bin/sh -c touch /tmp/mine"]


def test_run_builds_are_reproducible_and_cached(scratch: Path) -> None:
    """The same Containerfile gives the same manifest (times set to the epoch); a rebuild takes every RUN from
    the cache, keyed by parent and instruction text; changing one RUN's text rebuilds it and what follows."""
    cache = scratch / "conformance-cache"
    first: list[str] = []
    for _ in range(2):
        shutil.rmtree(scratch / "run-layout", ignore_errors=True)
        _ref_build(scratch, cache=cache)
        first.append(Layout(scratch / "run-layout").resolve("run").digest)
    assert first[0] == first[1]
    fresh = scratch / "fresh"
    fresh.mkdir()
    shutil.copytree(scratch / "busybox", fresh / "busybox")
    _ref_build(fresh)  # no cache at all: the same digest again
    assert Layout(fresh / "run-layout").resolve("run").digest == first[0]
    context = scratch / "run-context"
    changed = STEPS.replace("RUN rm /etc/motd", "RUN rm -f /etc/motd")
    (context / "Containerfile").write_text(f"FROM oci:{scratch / 'busybox'}:bb\n{changed}")
    result = build_image(context / "Containerfile", context, scratch / "run-layout", "run", cache=cache)
    assert [step.cached for step in result.steps] == [True] + [False] * 8


def test_a_failing_run_names_the_line_and_the_status(scratch: Path) -> None:
    """RUN exiting 3 fails the build: Containerfile line, instruction, the command and its status; nothing left."""
    before = leftovers()
    with pytest.raises(BuildError) as caught:
        _ref_build(scratch, "RUN echo fine\nRUN exit 3\n")
    assert caught.value.line == 3
    assert str(caught.value) == ("Containerfile line 3 (RUN exit 3): the command '/bin/sh -c exit 3' returned "
                                 "a non-zero code: 3")
    assert leftovers() - before == set()


# Docker and podman ------------------------------------------------------------------------------------


@pytest.fixture
def docker() -> tuple[list[str], dict[str, str]]:
    """The docker client and its environment (classic builder); a skip saying why when no daemon answers."""
    try:
        client, env = docker_cli()
    except NotApplicable as why:
        pytest.skip(str(why))
    return [client], {**os.environ, **env, "DOCKER_BUILDKIT": "0"}


@pytest.fixture
def podman(scratch: Path) -> Iterator[tuple[list[str], dict[str, str]]]:
    """podman with a store private to the test (podman_argv: overlay, cgroupfs, runc); a skip when it cannot run."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    argv = podman_argv(str(scratch))
    env = {**os.environ, "TMPDIR": str(scratch / "podman" / "tmp")}
    (scratch / "podman" / "tmp").mkdir(parents=True)
    answer = subprocess.run([*argv, "info", "--format", "{{.Host.OCIRuntime.Name}}"], capture_output=True, text=True,
                            timeout=60, check=False, env=env)
    if answer.returncode != 0:
        pytest.skip(f"podman does not run here: {answer.stderr.strip()[:200]}")
    try:
        yield argv, env
    finally:
        subprocess.run([*argv, "rmi", "-a", "-f"], capture_output=True, timeout=120, check=False, env=env)


def test_run_layers_match_docker_classic_build(scratch: Path, docker: tuple[list[str], dict[str, str]]) -> None:
    """Per layer above the base, ref and `docker build` (DOCKER_BUILDKIT=0, --network none) hold the same trees."""
    client, env = docker
    image = busybox_image(scratch)
    tag = f"conformance-ref-run-{uuid.uuid4().hex[:12]}"
    archive = _docker_archive(scratch, busybox_layer(image), f"{tag}-base:1")
    context = scratch / "docker-context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {tag}-base:1\n{STEPS}")
    try:
        _run([*client, "load", "-q", "-i", str(archive)], env)
        started = time.monotonic()
        _run([*client, "build", "-q", "--no-cache", "--force-rm", "--network", "none", "-t", f"{tag}:1",
              str(context)], env)
        print(f"docker build: {time.monotonic() - started:.2f} s")
        _run([*client, "save", "-o", str(scratch / "docker.tar"), f"{tag}:1"], env)
    finally:
        subprocess.run([*client, "rmi", "-f", f"{tag}:1", f"{tag}-base:1"], capture_output=True, timeout=120, env=env,
                       check=False)
    theirs = _saved_layers(scratch / "docker.tar")[1:]
    started = time.monotonic()
    ours, instructions, _ = _ref_build(scratch)
    print(f"ref build: {time.monotonic() - started:.2f} s")
    assert len(ours) == len(theirs), f"ref made {instructions}, docker {len(theirs)} layers"
    for instruction, mine, docker_tree in zip(instructions, ours, theirs, strict=True):
        assert mine == docker_tree, f"{instruction}: ref {mine} != docker {docker_tree}"


#: What buildah makes in the container's own rootfs before the first RUN when the image lacks them: the
#: mount points of /dev, /proc, /sys, /run and the /etc/hostname bind (an empty 0755 file). They land in
#: that RUN's layer. Docker, like the reference, makes them in an init layer below the container's
#: upper dir, so no RUN layer holds them; they are dropped from podman's layers before comparing.
BUILDAH_MOUNT_POINTS = frozenset({"dev", "proc", "sys", "run", "etc/hostname"})


def _without_buildah_mount_points(tree: Tree) -> Tree:
    kept = {name: entry for name, entry in tree.items() if name not in BUILDAH_MOUNT_POINTS}
    if not any(name.startswith("etc/") for name in kept):
        kept.pop("etc", None)  # there only as the parent of etc/hostname
    return kept


def _whiteout_modes_dropped(tree: Tree) -> Tree:
    """containers/storage writes whiteout files with the 0/0 device's mode 0, moby (and ref) with 0600; a
    whiteout's own attributes mean nothing (layer.md § Whiteouts), so its mode is left out of the comparison."""
    return {name: (entry[0], -1, *entry[2:]) if name.rpartition("/")[2].startswith(".wh.") else entry
            for name, entry in tree.items()}


def test_run_layers_match_podman_build_but_workdir(scratch: Path, podman: tuple[list[str], dict[str, str]]) -> None:
    """podman build (buildah) gives the same RUN trees; its WORKDIR makes no layer (the directory arrives with
    the next RUN, whose layer holds it in both builders, as a copied-up directory in ref's)."""
    argv, env = podman
    image = busybox_image(scratch)
    archive = _docker_archive(scratch, busybox_layer(image), "localhost/conformance-ref-run-base:1")
    context = scratch / "podman-context"
    context.mkdir()
    (context / "Containerfile").write_text(f"FROM localhost/conformance-ref-run-base:1\n{STEPS}")
    _run([*argv, "load", "-q", "-i", str(archive)], env)
    started = time.monotonic()
    _run([*argv, "build", "-q", "--format", "docker", "--network", "none", "--ulimit", "nofile=1024:1024",
          "--ulimit", "nproc=1024:1024", "-t", "localhost/conformance-ref-run:1", str(context)], env)
    print(f"podman build: {time.monotonic() - started:.2f} s")
    _run([*argv, "save", "--format", "docker-archive", "-o", str(scratch / "podman.tar"),
          "localhost/conformance-ref-run:1"], env)
    theirs = [_whiteout_modes_dropped(_without_buildah_mount_points(tree))
              for tree in _saved_layers(scratch / "podman.tar")[1:]]
    ours, instructions, _ = _ref_build(scratch)
    kept = [(i, _whiteout_modes_dropped(tree)) for i, tree in zip(instructions, ours, strict=True)
            if not i.startswith("WORKDIR")]
    assert len(kept) == len(theirs), f"ref made {[i for i, _ in kept]}, podman {len(theirs)} layers"
    for (instruction, mine), podman_tree in zip(kept, theirs, strict=True):
        assert mine == podman_tree, f"{instruction}: ref {mine} != podman {podman_tree}"
