"""A realistic sample run for the report tests: every verdict, a faulty column, an unreachable host.

The sample is built as a results.json document (the shape the plugin writes) and then read with
Results.from_dict, so the tests exercise the same path as a real run.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from conformance.report.model import Results

HOSTILE = "<script>alert(1)</script>"

CLAUSES: dict[str, dict[str, Any]] = {
    "HOST-OVERLAY-001": {
        "title": "overlay filesystem type is available",
        "statement": "The kernel MUST list the overlay filesystem type in /proc/filesystems.",
        "level": "MUST", "area": "host", "tags": ["overlay"],
        "source": {"document": "Linux kernel Documentation/filesystems/overlayfs.rst", "section": "Overlay Filesystem",
                   "version": "v6.6", "url": "https://docs.kernel.org/filesystems/overlayfs.html"},
        "tour": "docs/tour.md#step-3",
    },
    "HOST-NS-USER-001": {
        "title": "unprivileged user namespaces can be created",
        "statement": "An unprivileged process SHOULD be able to create a user namespace.",
        "level": "SHOULD", "area": "host", "tags": ["namespaces"],
        "source": {"document": "user_namespaces(7)", "section": "DESCRIPTION", "version": "man-pages 6.05",
                   "url": None},
        "tour": None,
    },
    "OVL-WHITEOUT-001": {
        "title": "a whiteout hides the lower file",
        "statement": "Upper has a whiteout over lower a; stat and readdir of /a MUST NOT see it.",
        "level": "MUST", "area": "overlay", "tags": ["whiteout"],
        "source": {"document": "Linux kernel Documentation/filesystems/overlayfs.rst",
                   "section": "whiteouts and opaque directories", "version": "v6.6",
                   "url": "javascript:alert(1)"},
        "tour": None,
    },
    "OVL-XATTR-001": {
        "title": "trusted.overlay xattrs are hidden",
        "statement": "The merged view MAY hide trusted.overlay.* xattrs from listxattr.",
        "level": "MAY", "area": "overlay", "tags": ["xattr"],
        "source": {"document": "overlayfs.rst", "section": "xattrs", "version": "v6.6", "url": None},
        "tour": None,
    },
    "NS-PID-001": {
        "title": "first process in a new pid namespace is pid 1",
        "statement": "The first process created in a new PID namespace MUST have PID 1 in it.",
        "level": "MUST", "area": "namespaces", "tags": ["pid"],
        "source": {"document": "pid_namespaces(7)", "section": "The namespace init process",
                   "version": "man-pages 6.05", "url": "https://man7.org/linux/man-pages/man7/pid_namespaces.7.html"},
        "tour": None,
    },
    "CG-MEM-001": {
        "title": "memory.max limits memory",
        "statement": "Writing memory.max SHOULD make allocations past it fail or trigger the OOM killer.",
        "level": "SHOULD", "area": "cgroups", "tags": ["memory"],
        "source": {"document": "Documentation/admin-guide/cgroup-v2.rst", "section": "Memory", "version": "v6.6",
                   "url": "https://docs.kernel.org/admin-guide/cgroup-v2.html"},
        "tour": None,
    },
}

# (host, implementation, fault) columns; the faulty one injects a bug the suite must catch.
COLUMNS = [("local", "kernel", None), ("local", "ref", None), ("local", "kernel", "HOST-OVERLAY-001"),
           ("remote", "kernel", None), ("remote", "ref", None)]

# Verdicts that are not "pass", by (clause, column index).
VERDICTS: dict[tuple[str, int], str] = {
    ("HOST-OVERLAY-001", 2): "fail",  # the fault column is caught
    ("OVL-WHITEOUT-001", 3): "fail",
    ("HOST-NS-USER-001", 3): "warn",
    ("OVL-XATTR-001", 0): "skip",
    ("OVL-XATTR-001", 1): "skip",
    ("OVL-XATTR-001", 3): "skip",
    ("NS-PID-001", 4): "xfail",
    ("CG-MEM-001", 3): "error",
    ("CG-MEM-001", 4): "timeout",
}


def label(host: str, impl: str, fault: str | None) -> str:
    return f"{host}-{impl}" + (f"+fault:{fault}" if fault else "")


def make_result(clause_id: str, column: int, verdict: str) -> dict[str, Any]:
    host, impl, fault = COLUMNS[column]
    clause = CLAUSES[clause_id]
    message = {
        "pass": "",
        "fail": f"{clause_id} merged/a: expected ENOENT (whiteout in upper), got a regular file {HOSTILE}",
        "warn": f"{clause_id}: unshare(CLONE_NEWUSER): EPERM (kernel.unprivileged_userns_clone=0)",
        "skip": "trusted xattrs need CAP_SYS_ADMIN in the initial user namespace",
        "xfail": "known deviation: ref model does not reap in pid 1",
        "error": "probe crashed: Traceback (most recent call last) ...",
        "timeout": "timed out after 30 s",
    }[verdict]
    return {
        "clause": clause_id,
        "test": f"conformance/suite/{clause['area']}/test_x.py::test_{clause_id.lower()}[{label(host, impl, fault)}]",
        "host": host, "implementation": impl, "fault": fault, "level": clause["level"], "area": clause["area"],
        "verdict": verdict, "duration": 0.125, "message": message,
        "expected": "ENOENT" if verdict == "fail" else None,
        "actual": f"regular file {HOSTILE}" if verdict == "fail" else None,
        "context": {"path": "merged/a"} if verdict == "fail" else {},
    }


def make_doc() -> dict[str, Any]:
    results = [make_result(cid, col, VERDICTS.get((cid, col), "pass"))
               for cid in CLAUSES for col in range(len(COLUMNS))]
    results.append({
        "clause": None, "test": "[ghost] reachability", "host": "ghost", "implementation": None, "fault": None,
        "level": None, "area": None, "verdict": "unreachable", "duration": 0.0,
        "message": f"ssh: connect to host ghost port 22: Connection refused {HOSTILE}",
        "expected": "the host answers the probe", "actual": "Connection refused", "context": {},
    })
    return {
        "schema_version": 1,
        "run": {"id": "20261128T033000Z_ab12cd", "started": "2026-11-28T03:30:00Z", "stopped": "2026-11-28T03:31:02Z",
                "suite_version": "0.1.0", "git_sha": "0123456789abcdef0123456789abcdef01234567",
                "command": ["conformance", "run", "--level", "MUST"], "level": "MUST",
                "options": {"hosts": ["local://", "ssh://remote", "ssh://ghost"], "impls": ["kernel", "ref"],
                            "areas": ["host", "overlay", "namespaces", "cgroups"], "faults": True},
                "seeds": {"hypothesis": 123}},
        "clauses": {cid: {"id": cid, **c} for cid, c in CLAUSES.items()},
        "hosts": [
            {"name": "local", "spec": "local://", "reachable": True, "reason": None,
             "facts": {"kernel": {"release": "6.6.0", "config": {"OVERLAY_FS": "y"}},
                       "distro": f"Debian 12 {HOSTILE}", "mount_options": ["rw", "relatime"], "cgroup_v2": True}},
            {"name": "remote", "spec": "ssh://remote", "reachable": True, "reason": None,
             "facts": {"kernel": {"release": "5.15.0", "config": {"OVERLAY_FS": "m"}}, "distro": "Ubuntu 22.04",
                       "cgroup_v2": True}},
            {"name": "ghost", "spec": "ssh://ghost", "reachable": False,
             "reason": f"Connection refused {HOSTILE}", "facts": {}},
        ],
        "results": results,
        "summary": {},  # replaced below with the computed one
    }


@pytest.fixture
def sample_doc() -> dict[str, Any]:
    """The sample as a results.json document with a correct summary (a fresh copy per test)."""
    doc = make_doc()
    doc["summary"] = Results.from_dict(doc).to_dict()["summary"]
    return copy.deepcopy(doc)


@pytest.fixture
def sample(sample_doc: dict[str, Any]) -> Results:
    """The sample as Results."""
    return Results.from_dict(sample_doc)
