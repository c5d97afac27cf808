"""Entry point: `python3 -m conformance.probe REQUEST` or `python3 probe.pyz REQUEST`.

REQUEST is base64 of a JSON batch, or @PATH of a file holding that JSON. The answer is one JSON
document on stdout. One process answers a whole batch: starting Python costs 20-140 ms and an ssh
round trip about 10 ms, which a test pays once, not once per operation.
"""

from __future__ import annotations

import binascii
import json
import os
import sys
import time
from typing import Any

from conformance import __version__
from conformance.probe.actions import Context, NotApplicable, lookup
from conformance.probe.sandbox import Interrupted, Sandbox, error_dict, install_signal_handlers


def _read_request(arg: str) -> dict[str, Any]:
    if arg.startswith("@"):
        with open(arg[1:], encoding="utf-8") as handle:
            raw = handle.read()
    else:
        raw = binascii.a2b_base64(arg.encode()).decode()
    request: dict[str, Any] = json.loads(raw)
    return request


def run_batch(request: dict[str, Any]) -> dict[str, Any]:
    """Run each scenario in its own sandbox; one failing scenario does not stop the others."""
    observations: list[dict[str, Any]] = []
    for scenario in request["scenarios"]:
        started = time.monotonic()
        entry: dict[str, Any] = {"id": scenario.get("id"), "kind": scenario.get("kind")}
        sandbox = Sandbox(request.get("run_id", "adhoc"), request.get("tmp", "/tmp"))
        try:
            handler = lookup(scenario["kind"])
            with sandbox:
                context = Context(sandbox, scenario.get("implementation", "kernel"), scenario.get("fault"))
                entry["data"] = handler(scenario.get("params", {}), context)
            entry["ok"] = True
        except Interrupted:
            sandbox.close()
            raise
        except Exception as exc:
            entry["ok"] = False
            import traceback  # noqa: PLC0415  (only on the error path)

            entry["error"] = {**error_dict(exc), "traceback": traceback.format_exc(limit=6)}
            if isinstance(exc, NotApplicable):
                entry["error"] = {"not_applicable": str(exc), "error": str(exc)}
        entry["cleanup_problems"] = sandbox.close()
        entry["duration"] = round(time.monotonic() - started, 6)
        observations.append(entry)
    return {"probe_version": __version__, "pid": os.getpid(), "observations": observations}


def main(argv: list[str]) -> int:
    """Read a batch, answer it, exit 0 unless the request itself was unreadable."""
    install_signal_handlers()
    if len(argv) != 2:
        print("usage: python3 -m conformance.probe BASE64-JSON|@FILE", file=sys.stderr)
        return 2
    try:
        request = _read_request(argv[1])
    except (OSError, ValueError) as exc:
        print(f"conformance probe: unreadable request: {exc}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("conformance probe: must run as root (it mounts, unshares and writes cgroups); connect as "
              "root or pass --sudo", file=sys.stderr)
        return 2
    try:
        answer = run_batch(request)
    except Interrupted as exc:
        print(f"conformance probe: {exc}; cleaned up", file=sys.stderr)
        return 124
    json.dump(answer, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
