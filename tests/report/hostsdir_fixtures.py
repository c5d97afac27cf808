"""Per-host runs and a fan-out hosts dir built from the report sample (no host is touched)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from conformance.report.model import Results, dump
from conformance.verdicts import Verdict

RUN_ID = "20261206T093000Z_ab12cd34"


def per_host(sample: Results, name: str, kernel: str = "6.6.0", cgroup: str = "v2",
             failing: bool = False) -> Results:
    """The sample's "local" host alone, named ``name``, as one host's own `conformance run --as-host`."""
    host = next(h for h in sample.hosts if h.name == "local")
    facts = {**host.facts, "kernel": {"release": kernel}, "cgroup": {"mode": cgroup}}
    rows = [r for r in sample.results if r.host == "local"]
    if not failing:  # a conformant host: its faulty variant is caught, nothing else fails
        rows = [replace(r, verdict=Verdict.PASS) if r.verdict.is_bad and not r.fault else r for r in rows
                if not r.fault or r.verdict is Verdict.FAIL]
    run = replace(sample.run, id=RUN_ID, options={**sample.run.options, "areas": [], "impls": ["kernel", "ref"]})
    return replace(sample, run=run, hosts=(replace(host, name=name, facts=facts),),
                   results=tuple(replace(r, host=name) for r in rows))


def host_folder(hosts_dir: Path, name: str, results: Results | None = None,
                status: dict[str, Any] | None = None, log: str | None = None) -> Path:
    """hosts/<name>/ with results.json, status.json and run.log as run.yml leaves them."""
    folder = hosts_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    if results is not None:
        dump(results, folder / "results.json")
    if status is not None:
        (folder / "status.json").write_text(json.dumps({"host": name, **status}), encoding="utf-8")
    if log is not None:
        (folder / "run.log").write_text(log, encoding="utf-8")
    return folder
