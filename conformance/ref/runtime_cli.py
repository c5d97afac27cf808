"""`python3 -m conformance.ref.runtime run --bundle DIR ID` and `... spec`: the reference runtime for people.

The commands and their exit statuses follow runc's: `run` runs the container in the foreground and
exits with its status (128+N after signal N); `spec` prints the default config.json (runc writes it
to a file, this prints it, so `... spec > config.json` does the same). A config or start-up failure is
one line on stderr and exit status 2 (a usage error) or 1 (the runtime could not start the container),
never a traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence

from conformance.ref.runspec import ConfigError, default_config
from conformance.ref.runtime import FAULTS, ContainerError, run_bundle


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run it; the process's exit status."""
    parser = argparse.ArgumentParser(prog="python3 -m conformance.ref.runtime",
                                     description="The project's reference OCI runtime (like runc).")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a bundle's container in the foreground; exit with its status")
    run.add_argument("--bundle", "-b", default=".", help="the bundle directory (config.json and the rootfs)")
    run.add_argument("--timeout", type=float, default=None, help="kill the container after this many seconds")
    run.add_argument("--fault", action="append", default=[], choices=sorted(FAULTS),
                     help="run a deliberately faulty variant (repeatable); see FAULTS in runtime.py")
    run.add_argument("container_id", metavar="ID", help="a name for the container (letters, digits, _+.-)")
    spec = commands.add_parser("spec", help="print a default config.json (like `runc spec`)")
    spec.add_argument("--hostname", default=None)
    spec.add_argument("--rootless", action="store_true", help="add a user namespace mapping root to your uid")
    spec.add_argument("args", nargs="*", default=["sh"], help="the process's argv (default: sh)")
    options = parser.parse_args(argv)
    if options.command == "spec":
        import os  # noqa: PLC0415  (only for --rootless)

        maps = [(0, os.getuid(), 1)] if options.rootless else None
        print(json.dumps(default_config(options.args, hostname=options.hostname, user_ns_maps=maps), indent=2))
        return 0
    try:
        return run_bundle(options.bundle, options.container_id, faults=frozenset(options.fault),
                          timeout=options.timeout)
    except ConfigError as err:
        print(f"conformance ref runtime: {err}", file=sys.stderr)
        return 2
    except ContainerError as err:
        print(f"conformance ref runtime: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


if __name__ == "__main__":
    raise SystemExit(main())
