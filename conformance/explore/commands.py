"""The `conformance ref ...` command group: one small function per subcommand, registered in one table.

cli.py calls `add_parser(sub)` to put the group in and dispatches to `run(args)`. A new subcommand
(`ref build`...) is one `_add_*` function that sets `handler`, listed in SUBCOMMANDS.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from conformance.ref.errors import RefError

DEFAULT_STORE = "/var/tmp/conformance-store"

Handler = Callable[[argparse.Namespace], int]


def _add_inspect(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("inspect", help="an image's layers, config and (with a container) its overlay",
                            description="IMAGE is an OCI image layout directory, or a `docker save` / "
                                        "`podman save` archive, with :tag to pick one of its images (path[:tag]).")
    parser.add_argument("image", metavar="IMAGE")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--container", metavar="NAME",
                     help="unpack into the store and create (or reuse) this container; show its GraphDriver data")
    who.add_argument("--upper", metavar="DIR", type=Path, help="draw this overlay upper directory as the container")
    parser.add_argument("--store", default=DEFAULT_STORE, type=Path,
                        help=f"the layer store for --container (default {DEFAULT_STORE}; needs root)")
    parser.add_argument("--json", action="store_true", help="the model as JSON, stable keys")
    parser.add_argument("--svg", metavar="FILE", type=Path, help="also draw the layer stack as SVG into FILE")
    parser.set_defaults(handler=cmd_inspect)


def _add_layer(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    layer = sub.add_parser("layer", help="look at one layer")
    lsub = layer.add_subparsers(dest="layer_command", required=True)
    show = lsub.add_parser("show", help="a layer's entries, whiteouts marked",
                           description="LAYER is a blob file (tar, tar.gz, tar.zst), LAYOUT@sha256:..., or "
                                       "LAYOUT[:tag]#N for an image's N-th layer (0 is the base).")
    show.add_argument("layer", metavar="LAYER")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_layer_show)


DEFAULT_CACHE = "/var/tmp/conformance-build-cache"


def _add_build(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("build", help="build a Containerfile (FROM scratch or a local image) into an OCI layout",
                            description="Supports FROM (scratch, oci:, oci-archive:, docker-archive:), COPY, ADD "
                                        "(local tars are extracted), RUN (in a container of the reference runtime; "
                                        "needs root), ENV, WORKDIR, USER, LABEL, CMD, ENTRYPOINT.")
    parser.add_argument("context", type=Path, help="the build context directory")
    parser.add_argument("-f", "--file", type=Path, help="the Containerfile (default: CONTEXT/Containerfile, "
                                                        "else CONTEXT/Dockerfile)")
    parser.add_argument("-t", "--tag", required=True, metavar="LAYOUT:TAG",
                        help="where to write the image: an OCI layout directory (made if missing) and a tag")
    parser.add_argument("--cache", type=Path, default=Path(DEFAULT_CACHE),
                        help=f"the build cache (default {DEFAULT_CACHE})")
    parser.add_argument("--no-cache", action="store_true", help="build every step again, and store nothing")
    parser.add_argument("--compression", choices=("gzip", "none", "zstd"), default="gzip")
    parser.add_argument("--source-date-epoch", type=int, default=0, metavar="SECONDS",
                        help="the time every file and history entry gets (default 0: reproducible)")
    parser.set_defaults(handler=cmd_build)


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("run", help="run a command in a fresh container of an image (root; reference runtime)",
                            description="IMAGE is an OCI layout directory or a `docker save` / OCI archive, with "
                                        ":tag to pick one (path[:tag]). Its layers are mounted with overlay and a "
                                        "fresh upper dir on a tmpfs, run with the reference runtime, and removed "
                                        "afterwards. CMD replaces the image's Cmd, as in `docker run`. The exit "
                                        "status is the container's; 2 when the image or the runtime fails.")
    parser.add_argument("--hostname", metavar="H", help="the container's hostname")
    parser.add_argument("--user-ns", action="store_true",
                        help="a user namespace mapping root to 100000 (65536 ids); image files then show as nobody")
    parser.add_argument("--env", "-e", action="append", default=[], metavar="K=V",
                        help="set a variable (repeatable), over the image's Env")
    parser.add_argument("--workdir", "-w", metavar="W", help="the working directory (absolute), over WorkingDir")
    from conformance.ref.runflags import add_resource_flags  # noqa: PLC0415

    add_resource_flags(parser)  # --memory, --memory-swap, --pids-limit, --cpus, --cpuset-cpus, --cpu-shares
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD",
                        help="the command and its arguments, after --")
    parser.set_defaults(handler=cmd_run)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_inspect, _add_layer, _add_build, _add_run]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `ref` and its subcommands to the top-level subparsers."""
    ref = sub.add_parser("ref", help="the reference implementations: look at images and layers")
    rsub = ref.add_subparsers(dest="ref_command", required=True)
    for add in SUBCOMMANDS:
        add(rsub)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the subcommand; a refusal of the reference code is a usage error (exit 2) with its message."""
    handler: Handler = args.handler
    try:
        return handler(args)
    except (RefError, OSError) as err:
        print(f"conformance ref: {err}", file=sys.stderr)
        return 2


def cmd_inspect(args: argparse.Namespace) -> int:
    """Build the model, print it as text or JSON, draw it when asked."""
    from conformance.explore import inspect, svg  # noqa: PLC0415

    path, ref = inspect.parse_image(args.image)
    if path.is_file():  # `docker save` or `podman save` output: read through a temporary layout
        from conformance.ref.archives import archive_as_layout  # noqa: PLC0415

        with archive_as_layout(path, ref) as (layout, name):
            info = dataclasses.replace(inspect.inspect_image(layout, name), source=str(path))
    else:
        info = inspect.inspect_image(path, ref)
    if args.container:
        info = inspect.with_container(info, args.store, args.container)
    elif args.upper:
        info = inspect.with_upper(info, args.upper)
    print(inspect.render_json(info) if args.json else inspect.render_text(info), end="" if not args.json else "\n")
    if args.svg:
        subtitle = (f"manifest {inspect.short(info.manifest.digest)} · {len(info.layers)} layers · "
                    f"{info.platform or '?'}")
        name = Path(info.source).name + (f":{info.ref}" if info.ref else "")
        args.svg.write_text(svg.render_svg(info.stack(), title=f"Layer stack of {name}", subtitle=subtitle),
                            encoding="utf-8")
        print(f"wrote {args.svg}", file=sys.stderr)
    return 0


def cmd_layer_show(args: argparse.Namespace) -> int:
    """List one layer."""
    from conformance.explore import show  # noqa: PLC0415

    layer = show.load_layer(args.layer)
    print(show.render_json(layer) if args.json else show.render_text(layer), end="\n" if args.json else "")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Build, then say what each step made and whether the cache had it."""
    from conformance.ref.build import build_image  # noqa: PLC0415

    layout, sep, tag = str(args.tag).rpartition(":")
    if not sep or not layout or not tag:
        print(f"conformance ref build: --tag must be LAYOUT:TAG, not {args.tag!r}", file=sys.stderr)
        return 2
    containerfile = args.file or next((args.context / name for name in ("Containerfile", "Dockerfile")
                                       if (args.context / name).is_file()), args.context / "Containerfile")
    result = build_image(containerfile, args.context, layout, tag, cache=None if args.no_cache else args.cache,
                         source_date_epoch=args.source_date_epoch, compression=args.compression)
    for step in result.steps:
        made = (f"layer {step.layer.diff_id[:19]}  {step.layer.file_count:>4} entries" if step.layer
                else "no layer (config only)")
        print(f"{'cached' if step.cached else 'built ':6}  line {step.line:<3} {made:44}  {step.instruction}")
    print(f"{layout}:{tag}  manifest {result.manifest_digest}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the container in the foreground; SIGTERM unwinds like Ctrl-C, so the teardown runs on both."""
    import signal  # noqa: PLC0415

    from conformance.ref.container import run_image  # noqa: PLC0415
    from conformance.ref.errors import RefError  # noqa: PLC0415
    from conformance.ref.runflags import resources_from_args  # noqa: PLC0415

    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv  # `args.command` is the top-level one
    for item in args.env:
        if "=" not in item or item.startswith("="):
            print(f"conformance ref run: --env {item!r}: expected K=V", file=sys.stderr)
            return 2

    try:
        resources = resources_from_args(args) or None
    except RefError as err:
        print(f"conformance ref run: {err}", file=sys.stderr)
        return 2

    def _terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return run_image(args.image, command, hostname=args.hostname, user_ns=args.user_ns, env=args.env,
                         workdir=args.workdir, resources=resources)
    finally:
        signal.signal(signal.SIGTERM, previous)
