"""The only module that knows testinfra: host selection and running a command on a host.

pytest-testinfra gives us host specs users know (local://, ssh://, ansible:// with an inventory) and
its backends. It is no longer actively maintained, so it stays behind this small adapter: swapping it
out means rewriting this file only.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

DEFAULT_HOSTS = ("local://",)


class HostError(Exception):
    """A host could not run a command; the message says which host and why."""


class HostUnreachable(HostError):
    """The host did not answer at all (connection refused, no route, auth failed, inventory empty)."""


class HostSelectionError(ValueError):
    """--hosts or the inventory selected nothing, or something malformed: a usage error."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What one command did on a host."""

    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    duration: float

    def describe(self) -> str:
        """The command, exit code and the end of stderr, for error messages."""
        tail = self.stderr.strip()[-800:]
        shown = [a if len(a) <= 120 else f"{a[:40]}...({len(a)} bytes)" for a in self.argv]
        return f"`{shlex.join(shown)}` exited {self.rc}" + (f": {tail}" if tail else "")


class Host(Protocol):
    """A place where probes run: the local machine or a remote one."""

    @property
    def name(self) -> str:
        """Short, stable name used in test ids and reports (local, node1...)."""
        ...

    @property
    def spec(self) -> str:
        """The host spec as the user gave it or the inventory resolved it."""
        ...

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """Run argv (no shell) with a timeout enforced on the host itself."""
        ...


@dataclass(slots=True)
class TestinfraHost:
    """A Host backed by a testinfra Host object."""

    backend_host: Any
    _name: str = field(default="")

    @property
    def name(self) -> str:
        """Short name: 'local' for the local backend, else the backend's host name."""
        return self._name

    @property
    def spec(self) -> str:
        """The testinfra id, e.g. ssh://node1 or ansible://web1 (local:// for this machine)."""
        backend = self.backend_host.backend
        kind = backend.get_connection_type()
        if kind == "local":
            return "local://"
        spec: Any = getattr(backend, "host", None)  # ssh and paramiko keep user and port in a HostSpec
        if kind in ("ssh", "safe-ssh", "paramiko") and getattr(spec, "name", None):
            user = f"{spec.user}@" if getattr(spec, "user", None) else ""
            port = f":{spec.port}" if getattr(spec, "port", None) else ""
            return f"{kind}://{user}{spec.name}{port}"
        return str(backend.get_pytest_id())

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """Run through the backend, wrapped in coreutils `timeout` so a hung host-side step is killed there.

        testinfra's run() has no timeout of its own (pytest-testinfra#716): `timeout -k` on the host
        sends SIGTERM (the probe cleans up on it) and SIGKILL five seconds later.
        """
        wrapped = ["timeout", "-k", "5", str(max(1, int(timeout))), *argv]
        command = shlex.join(wrapped)
        started = time.monotonic()
        try:
            out = self.backend_host.run(command)
        except RuntimeError as exc:  # testinfra's ssh backend raises RuntimeError(CommandResult) on rc 255
            detail = getattr(exc.args[0], "stderr", None) if exc.args else None
            raise HostUnreachable(f"{self.name}: {str(detail or exc).strip()[-400:]}") from None
        except OSError as exc:
            raise HostUnreachable(f"{self.name}: {exc}") from None
        result = CommandResult(tuple(argv), int(out.rc), out.stdout, out.stderr, time.monotonic() - started)
        if result.rc == 255 and self.backend_host.backend.get_connection_type() in ("ssh", "safe-ssh", "paramiko"):
            raise HostUnreachable(f"{self.name}: {result.stderr.strip()[-400:] or 'ssh exited 255'}")
        return result


def _short_name(backend: Any) -> str:
    if backend.get_connection_type() == "local":
        return "local"
    name = str(backend.get_hostname())
    return name.rsplit("@", maxsplit=1)[-1] or name


def resolve(
    specs: Sequence[str] | None,
    *,
    connection: str | None = None,
    ansible_inventory: str | None = None,
    ssh_config: str | None = None,
    ssh_identity_file: str | None = None,
    sudo: bool = False,
) -> list[Host]:
    """Turn host specs into hosts, sorted by name so every xdist worker sees the same order.

    Raises HostSelectionError when the specs are empty or match nothing, instead of letting every
    test fail one by one (pytest-testinfra#69).
    """
    import testinfra  # noqa: PLC0415  (imported late: the CLI's `clauses` and `report` never need it)

    # testinfra runs ansible-inventory from PATH; in a venv that is not activated it sits next to python.
    venv_bin = os.path.dirname(sys.executable)
    if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")

    wanted = [s.strip() for s in (specs if specs is not None else DEFAULT_HOSTS) if s.strip()]
    if not wanted:
        raise HostSelectionError("--hosts is empty: give at least one host spec, e.g. local:// or ssh://user@node1")
    try:
        found = testinfra.get_hosts(
            wanted,
            connection=connection,
            ansible_inventory=ansible_inventory,
            ssh_config=ssh_config,
            ssh_identity_file=ssh_identity_file,
            sudo=sudo,
        )
    except Exception as exc:  # testinfra raises RuntimeError and ansible errors of several kinds
        raise HostSelectionError(f"could not resolve hosts {', '.join(wanted)}: {exc}") from None
    if not found:
        where = f" in inventory {ansible_inventory}" if ansible_inventory else ""
        raise HostSelectionError(f"no hosts matched {', '.join(wanted)}{where}")
    hosts: dict[str, Host] = {}
    for backend_host in found:
        name = _short_name(backend_host.backend)
        if name in hosts:
            name = f"{name}-{len(hosts)}"
        hosts[name] = TestinfraHost(backend_host, name)
    return [hosts[n] for n in sorted(hosts)]
