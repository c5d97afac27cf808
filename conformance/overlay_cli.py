"""`conformance overlay replay FILE`: run one overlay scenario again, on one implementation or two.

A property test that finds the model and the kernel disagreeing writes the shrunk scenario as a YAML
file; this command is how a person looks at it: the observation of `--impl`, and with `--against`
the differences line by line. Exit 0 when the two agree (or with no `--against`), 1 when they differ,
2 when the file or the probe fails.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from typing import Any


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], host_options: Any) -> None:
    """Add `overlay replay` to the top-level subparsers (host_options adds --hosts and friends)."""
    overlay = sub.add_parser("overlay", help="the overlay area: replay a scenario on implementations")
    osub = overlay.add_subparsers(dest="overlay_command", required=True)
    replay = osub.add_parser("replay", help="run a scenario file (as property tests write them) again")
    replay.add_argument("file", help="a YAML scenario: kind: overlay.run, params: {lowers, upper, options, ops}")
    replay.add_argument("--impl", default="kernel", help="the implementation to run it on (default kernel)")
    replay.add_argument("--against", metavar="IMPL", help="also run it on this one and print the differences")
    replay.add_argument("--json", action="store_true", help="print the observations as JSON")
    host_options(replay)


def run(args: argparse.Namespace, resolve: Any) -> int:
    """Replay the scenario; see the module docstring for the exit codes."""
    from conformance import facts  # noqa: PLC0415
    from conformance.overlay_diff import differences, load_scenario  # noqa: PLC0415

    try:
        scenario = load_scenario(args.file)
    except ValueError as err:
        print(f"conformance overlay replay: {err}", file=sys.stderr)
        return 2
    found = facts.gather(resolve(args), f"replay{secrets.token_hex(2)}", 120.0)
    status = 0
    try:
        for name in found.reachable:
            client = found.clients[name]
            impls = [args.impl, *([args.against] if args.against else [])]
            seen: dict[str, Any] = {}
            for impl in impls:
                [obs] = client.call([scenario], impl)
                if not obs.ok:
                    print(f"{name} {impl}: the probe could not run it: {(obs.error or {}).get('error')}",
                          file=sys.stderr)
                    return 2
                seen[impl] = obs.data
            if args.json:
                print(json.dumps({"host": name, "observations": seen}, indent=2, sort_keys=True))
            else:
                first = seen[args.impl]
                print(f"{name} {args.impl}: mount {first.get('mount_error') or 'ok'}; "
                      f"{len(first.get('merged') or {})} merged entries, {len(first.get('upper') or {})} upper")
                for n, result in enumerate(first.get("results") or []):
                    print(f"  op {n} {json.dumps(scenario.params['ops'][n], sort_keys=True)} -> "
                          f"{result.get('errno') or 'ok'} {json.dumps(result.get('value'))}")
                for path, node in (first.get("upper") or {}).items():
                    print(f"  upper {path}: {_describe(node)}")
            if args.against:
                lines = differences(seen[args.impl], seen[args.against], (args.impl, args.against),
                                    scenario.params.get("ops", ()))
                print(f"{name}: {args.impl} and {args.against} " + ("agree" if not lines else "differ:"))
                for line in lines:
                    print(f"  {line}")
                status = max(status, 1 if lines else 0)
        for name, why in found.unreachable.items():
            print(f"{name}: UNREACHABLE: {why}", file=sys.stderr)
            status = 2
    finally:
        for client in found.clients.values():
            client.remove_bundle()
    return status


def _describe(node: dict[str, Any]) -> str:
    """One upper entry as a person reads it: a whiteout by name, xattrs as key=value."""
    kind = str(node.get("type"))
    if kind == "chardev" and list(node.get("rdev") or []) == [0, 0]:
        text = "whiteout (char 0/0)"
    else:
        text = f"{kind} {int(node.get('mode', 0)):04o} {node.get('uid')}:{node.get('gid')}"
        if kind == "file":
            text += f" {json.dumps(node.get('content'))}"
        elif kind == "symlink":
            text += f" -> {node.get('target')}"
    xattrs = node.get("xattrs") or {}
    return text + "".join(f" {key}={value}" for key, value in sorted(xattrs.items()))
