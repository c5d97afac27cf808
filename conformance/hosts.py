"""The only module that knows testinfra: host selection and running a command on a host.

pytest-testinfra gives us host specs users know (local://, ssh://, ansible:// with an inventory) and
its backends. It is no longer actively maintained, so it stays behind this small adapter: swapping it
out means rewriting this file only.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

DEFAULT_HOSTS = ("local://",)
LOCAL_SPEC = "local://"
#: A host name as a report and an inventory use it: letters, digits and ``_.:@-``, no spaces or brackets
#: (it becomes part of test ids, junit names and "[host] reachability" records).
_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")
_INVENTORY_TIMEOUT = 120.0


class HostError(Exception):
    """A host could not run a command; the message says which host and why."""


class HostUnreachable(HostError):
    """The host did not answer at all (connection refused, no route, auth failed, inventory empty)."""


class HostSelectionError(ValueError):
    """--hosts or the inventory selected nothing, or something malformed: a usage error."""


def check_host_name(name: str, what: str = "--as-host") -> str:
    """``name`` if it can name a host in a report, else HostSelectionError saying what is allowed."""
    if not _HOST_NAME.match(name):
        raise HostSelectionError(f"{what} {name!r}: a host name is letters, digits and '_.:@-', starting with a "
                                 "letter or digit (an inventory_hostname, e.g. node1 or node1.example.org)")
    return name


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


def renamed(host: Host, name: str) -> Host:
    """``host`` under another name (``--as-host``): the report names it ``name`` instead of ``local``."""
    if not isinstance(host, TestinfraHost):
        raise HostSelectionError(f"cannot rename host {host.name!r} ({type(host).__name__})")
    return TestinfraHost(host.backend_host, check_host_name(name))


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


@dataclass(frozen=True, slots=True)
class Inventory:
    """The hosts an Ansible inventory selects (after ``--limit``) and their variables, as Ansible resolved them.

    Ansible itself (``ansible-inventory --list``) merges group and host variables, so the suite never
    parses inventory YAML (or scripts, or plugins) on its own and sees what a playbook would see.
    """

    path: str
    limit: str | None
    hosts: tuple[str, ...]
    hostvars: Mapping[str, Mapping[str, Any]]

    def to_json(self) -> str:
        """For xdist workers: they get the controller's view instead of running Ansible again."""
        return json.dumps({"path": self.path, "limit": self.limit, "hosts": list(self.hosts),
                           "hostvars": {h: dict(v) for h, v in self.hostvars.items()}})

    @classmethod
    def from_json(cls, text: str) -> Inventory:
        """The inverse of to_json."""
        data = json.loads(text)
        return cls(data["path"], data["limit"], tuple(data["hosts"]), data["hostvars"])


def ansible_inventory_program() -> str:
    """``ansible-inventory`` next to this interpreter (the venv's, even when it is not activated), or on PATH."""
    beside = Path(sys.executable).with_name("ansible-inventory")
    if beside.exists():
        return str(beside)
    found = shutil.which("ansible-inventory")
    if found is None:
        raise HostSelectionError("ansible-inventory is not installed next to this Python nor on PATH; "
                                 "install ansible-core (bin/bootstrap does) to use --inventory")
    return found


def _group_hosts(listing: Mapping[str, Any], group: str, seen: set[str]) -> list[str]:
    """Every host of ``group`` and of its children, depth first (the --list output nests groups by name)."""
    if group in seen:
        return []
    seen.add(group)
    node = listing.get(group) or {}
    found = list(node.get("hosts") or [])
    for child in node.get("children") or []:
        found += _group_hosts(listing, child, seen)
    return found


@functools.lru_cache(maxsize=8)
def _read_inventory(path: str, mtime_ns: int, limit: str | None) -> Inventory:
    """Ask Ansible once per (file, version of it, limit) and process.

    The CLI counts hosts with it and the plugin selects tests with it in the same process, so a run asks
    Ansible once.
    """
    del mtime_ns  # part of the cache key only: an edited inventory is read again
    argv = [ansible_inventory_program(), "-i", path, "--list"]
    if limit:
        argv += ["--limit", limit]
    env = {**os.environ, "ANSIBLE_VERBOSITY": "0", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
           "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True", "ANSIBLE_NOCOLOR": "1"}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_INVENTORY_TIMEOUT, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostSelectionError(f"inventory {path}: `{shlex.join(argv)}` did not run: {exc}") from None
    errors = [line.strip() for line in done.stderr.splitlines()
              if "[ERROR]" in line or line.startswith("Failed to parse inventory:")]
    if done.returncode != 0:
        tail = "; ".join(dict.fromkeys(errors)) or "\n".join(done.stderr.strip().splitlines()[-5:])
        raise HostSelectionError(f"inventory {path}: ansible-inventory exited {done.returncode}: {tail}")
    try:
        listing = json.loads(done.stdout)
    except ValueError:
        raise HostSelectionError(f"inventory {path}: ansible-inventory did not answer with JSON: "
                                 f"{done.stdout[:200]!r}") from None
    hostvars = (listing.get("_meta") or {}).get("hostvars") or {}
    hosts = sorted(set(_group_hosts(listing, "all", set())))
    if not hosts:
        where = f" matching --limit {limit!r}" if limit else ""
        raise HostSelectionError(f"inventory {path} has no hosts{where}")
    for name in hosts:
        check_host_name(name, f"inventory {path}: host")
    return Inventory(path, limit, tuple(hosts), {h: dict(hostvars.get(h) or {}) for h in hosts})


def read_inventory(path: str, limit: str | None = None) -> Inventory:
    """The hosts of an inventory (optionally ``--limit``ed with an Ansible pattern) and their variables.

    Raises HostSelectionError for a missing or unparsable inventory and for a selection of no hosts.
    """
    file = Path(path)
    if not file.exists():
        raise HostSelectionError(f"inventory {path}: no such file or directory")
    resolved = str(file.resolve())
    return _read_inventory(resolved, file.stat().st_mtime_ns, limit or None)
