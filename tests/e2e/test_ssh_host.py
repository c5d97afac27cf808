"""Controller mode: the same suite through ssh, against an sshd of the test's own on 127.0.0.1.

The host is this machine again, reached over a real ssh connection, so the probe zip goes through
testinfra's ssh backend (upload in chunks, `timeout` on the far side, JSON back) exactly as it would
to a remote host.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.clauses import load_catalogue
from tests.conftest import needs_root, run_cli

pytestmark = [needs_root(), pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ssh_host(tmp_path: Path) -> Iterator[Path]:
    """An sshd on a free loopback port with throwaway keys; yields an ssh_config naming it 'loopback'."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd):
        pytest.fail("sshd is missing: playbooks/site.yml installs openssh-server")
    port = _free_port()
    for name in ("hostkey", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    (tmp_path / "authorized_keys").write_text((tmp_path / "client.pub").read_text())
    config = tmp_path / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1:{port}\nHostKey {tmp_path / 'hostkey'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nUseDNS no\nPasswordAuthentication no\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    daemon = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    client_config = tmp_path / "ssh_config"
    client_config.write_text(
        f"Host loopback\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {tmp_path / 'client'}\n"
        f"  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile {tmp_path / 'known_hosts'}\n"
        "  KexAlgorithms curve25519-sha256\n  BatchMode yes\n"
    )
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["ssh", "-F", str(client_config), "loopback", "true"], capture_output=True,
                             check=False, timeout=20).returncode != 0:
            assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else "sshd exited"
            assert time.monotonic() < deadline, "sshd did not answer in 20 s"
            time.sleep(0.2)
        yield client_config
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def test_suite_runs_over_ssh_like_on_localhost(ssh_host: Path, tmp_path: Path) -> None:
    done = run_cli("run", "--hosts", "ssh://loopback", "--ssh-config", str(ssh_host), "--area", "host",
                   "--report-dir", str(tmp_path / "reports"))
    results = json.loads((tmp_path / "reports" / "latest" / "results.json").read_text())
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    [host] = results["hosts"]
    assert host["name"] == "loopback" and host["reachable"], host
    verdicts = {r["clause"]: r["verdict"] for r in results["results"]}
    assert sorted(verdicts) == sorted(c.id for c in load_catalogue().select(("host",)))
    assert "error" not in verdicts.values() and "timeout" not in verdicts.values(), verdicts
    mine = f"conformance-{results['run']['id'].split('_')[1]}"  # not another job's scratch on this host
    assert not [p for p in os.listdir("/tmp") if p.startswith(mine)]
