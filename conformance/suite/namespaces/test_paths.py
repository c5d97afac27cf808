"""NS-MNT-007..009: masked and read-only paths (runtime-spec linux.maskedPaths and linux.readonlyPaths)."""

from __future__ import annotations

import pytest

from conformance.scenarios import namespaces as ns
from conformance.suite.namespaces import ran
from conformance.target import Target


@pytest.mark.clause("NS-MNT-007")
def test_masked_path_cannot_be_read(target: Target) -> None:
    """/proc/timer_list (masked by default) MUST read as empty; /proc/version (not masked) must not."""
    script = "echo masked=$(wc -c < /proc/timer_list); echo plain=$(wc -c < /proc/version)"
    said = ran(target, target.observe(ns.run(script)))
    target.expect_that("/proc/version bytes", said.get("plain", "0") not in ("", "0"), "more than 0 (a control)",
                       said.get("plain"))
    target.expect("/proc/timer_list bytes", "0", said.get("masked"),
                  hint="a masked file is covered by /dev/null (runc's default maskedPaths)")


@pytest.mark.clause("NS-MNT-009")
def test_readonly_path_cannot_be_written(target: Target) -> None:
    """/proc/sys is read-only by default: writing kernel/domainname there MUST fail (the UTS namespace is new)."""
    script = "echo conformance > /proc/sys/kernel/domainname 2>/dev/null; echo rc=$?"
    said = ran(target, target.observe(ns.run(script, caps=["CAP_SYS_ADMIN"])))
    target.expect_that("write status", said.get("rc") not in (None, "0"), "non-zero (EROFS)", said.get("rc"),
                       hint="runc's default readonlyPaths hold /proc/sys")


@pytest.mark.clause("NS-MNT-008")
def test_masked_directory_is_empty(target: Target) -> None:
    """/sys/firmware (masked by default, a read-only tmpfs over it) MUST list nothing; /sys/kernel must."""
    script = "echo masked=$(ls /sys/firmware | wc -l); echo plain=$(ls /sys/kernel | wc -l)"
    said = ran(target, target.observe(ns.run(script)))
    target.expect_that("/sys/kernel entries", said.get("plain", "0") not in ("", "0"), "some (a control)",
                       said.get("plain"))
    target.expect("/sys/firmware entries", "0", said.get("masked"))
