"""NS-UTS-*: hostname and domainname belong to the container's UTS namespace."""

from __future__ import annotations

import pytest

from conformance.scenarios import namespaces as ns
from conformance.suite.namespaces import ran
from conformance.target import Target


@pytest.mark.clause("NS-UTS-001")
def test_configured_hostname_is_set_inside_only(target: Target) -> None:
    """With hostname conformance-box, the container MUST see it; the host's hostname MUST NOT change."""
    seen = target.observe(ns.run("echo name=$(hostname)", hostname="conformance-box"))
    target.expect("hostname inside", "conformance-box", ran(target, seen).get("name"))
    target.expect("host's hostname after", seen["host"]["hostname_before"], seen["host"]["hostname"])


@pytest.mark.clause("NS-UTS-002")
def test_configured_domainname_is_set_inside_only(target: Target) -> None:
    """With domainname conformance.test, the container MUST see it; the host's domainname MUST NOT change."""
    seen = target.observe(ns.run("echo domain=$(cat /proc/sys/kernel/domainname)", hostname="conformance-box",
                                 domainname="conformance.test"))
    target.expect("domainname inside", "conformance.test", ran(target, seen).get("domain"))
    target.expect_that("host's domainname after", seen["host"]["domainname"] != "conformance.test",
                       "unchanged", seen["host"]["domainname"])


@pytest.mark.clause("NS-UTS-003")
def test_hostname_changed_inside_does_not_leak(target: Target) -> None:
    """With CAP_SYS_ADMIN the container renames itself: the host's hostname MUST NOT change."""
    seen = target.observe(ns.run("hostname conformance-renamed && echo renamed=$(hostname)",
                                 caps=["CAP_SYS_ADMIN"]))
    target.expect("hostname inside after sethostname", "conformance-renamed", ran(target, seen).get("renamed"))
    target.expect("host's hostname after", seen["host"]["hostname_before"], seen["host"]["hostname"])
