"""Host selection: empty specs are a usage error; an ssh host that refuses is unreachable, not a crash."""

from __future__ import annotations

import pytest

from conformance.hosts import HostSelectionError, HostUnreachable, resolve
from conformance.transport import ProbeClient


def test_empty_hosts_is_a_usage_error() -> None:
    with pytest.raises(HostSelectionError, match="--hosts is empty"):
        resolve([" ", ""])


def test_local_is_named_local() -> None:
    [host] = resolve(["local://"])
    assert host.name == "local" and host.spec == "local://"


def test_hosts_are_sorted_and_deterministic() -> None:
    names = [h.name for h in resolve(["ssh://root@127.0.0.2:1", "local://", "ssh://root@127.0.0.1:1"])]
    assert names == sorted(names)


def test_commands_carry_a_timeout() -> None:
    [host] = resolve(["local://"])
    result = host.run(["sleep", "5"], timeout=1)
    assert result.rc == 124


def test_refused_ssh_host_is_unreachable() -> None:
    [host] = resolve(["ssh://root@127.0.0.1:1?timeout=3"])
    with pytest.raises(HostUnreachable, match=r"127\.0\.0\.1"):
        ProbeClient(host, "unit").ensure()


def test_ssh_specs_keep_user_and_port() -> None:
    specs = sorted(h.spec for h in resolve(["ssh://root@127.0.0.1:1", "ssh://node9"]))
    assert specs == ["ssh://node9", "ssh://root@127.0.0.1:1"]
