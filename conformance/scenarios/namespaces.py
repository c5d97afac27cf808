"""Scenarios of the namespaces area: a busybox container, a shell script run in it, and what the host saw.

One scenario kind, "ns.run", is run by every runtime: the reference runtime (conformance/ref/runtime.py),
runc and crun (the same OCI bundle), podman and docker (the same rootfs imported as an image, the
namespaces asked for through their flags). The container reports what it sees by printing it; the host
side of the observation is what the probe saw from outside while the container ran.

The contract (plain JSON both ways):

params = {
  "script":     "..."             run as `/bin/sh -c SCRIPT` in the container (busybox applets on PATH);
  "namespaces": ["pid", "network", "ipc", "uts", "mount", "cgroup"]   the namespaces to create new; a type
                                  left out is shared with the runtime's (the probe's) namespace;
  "user_ns":    null | {"uid": [[inside, outside, count], ...], "gid": [...]}   a user namespace with maps;
  "hostname":   null | "name",  "domainname": null | "name",
  "readonly_root": false,
  "join":       null | {"type": T, "from": "host"}   join the probe's own namespace of type T by path
                                  (/proc/<probe pid>/ns/T), instead of creating one;
  "raw_namespaces": null | [...]  config.json's linux.namespaces verbatim (error cases: duplicates, a path of
                                  the wrong type), for the runtimes that take a config.json;
  "caps":       ["CAP_SYS_ADMIN", ...]   capabilities beyond the runtime's defaults (a script that mounts);
  "host":       ["sockets", "sysv-shm", "sysv-msg", "mqueue", "late-mount", "watch-mounts", "host-mark"]
                                  what the probe does on the host around the run (see below);
}

The container always has /chan: a directory of the probe's sandbox bind-mounted read-write. Before the
run the probe writes /chan/host.env (shell assignments: HOST_PID, TCP_PORT, ABSTRACT, SHM_KEY, MSG_KEY,
MQ_NAME, HOST_MARK (a file beside the rootfs on the host, never bound in), as the host steps made them).
A script that writes /chan/ready makes the probe do the "during" steps
("watch-mounts": is /chan/inner a mount point on the host now; "late-mount": mount a tmpfs with a file
`marker` at /chan/late) and then create /chan/go, which the script waits for (`wait_go`, which then
prints go=yes, or go=timeout when the host did not answer within 30 s).

observation = {
  "exit": int | null,              the container's exit status (null when it never started);
  "stdout": "...", "stderr": "...",
  "refused": null | "message",     the runtime refused the configuration before starting anything;
  "host": {
    "ns": {type: inode},           the probe's own namespaces (the runtime's, for a type not asked for);
    "hostname": "...", "domainname": "...",   the host's, after the run;
    "during": {"inner_is_mount": bool, "ready": bool},
    "files": {name: {"uid": int, "gid": int}},   what is in /chan after the run (its top level);
    "tcp_port": int | null,
  },
}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from conformance.scenarios import Scenario

#: What a container gets when a test does not say: every namespace but user, as `runc spec` writes them.
DEFAULT_NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")

#: The kernel's fallback tunnel devices: made in every new network namespace while their module is loaded
#: and net.core.fb_tunnels_only_for_init_net is 0 (Documentation/admin-guide/sysctl/net.rst). They belong to
#: the namespace (NETIF_F_NETNS_LOCAL), not to the host, and no runtime can leave them out.
FALLBACK_TUNNELS = frozenset({"tunl0", "gre0", "gretap0", "erspan0", "sit0", "ip6tnl0", "ip6gre0",
                              "ip_vti0", "ip6_vti0"})

#: The user namespace the tests ask for: container root is host uid/gid 100000, 65536 ids mapped.
USER_MAP: dict[str, list[list[int]]] = {"uid": [[0, 100000, 65536]], "gid": [[0, 100000, 65536]]}

#: Shell helpers prepended to every script: `wait_go` hands over to the host steps and waits for them.
PRELUDE = (
    ". /chan/host.env 2>/dev/null; "
    "wait_go() { : > /chan/ready; n=0; while [ ! -e /chan/go ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done; "
    "[ -e /chan/go ] && echo go=yes || echo go=timeout; }; "
)


def run(script: str, *, namespaces: Iterable[str] = DEFAULT_NAMESPACES, user_ns: Mapping[str, Any] | None = None,
        hostname: str | None = None, domainname: str | None = None, readonly_root: bool = False,
        host: Iterable[str] = (), join: Mapping[str, str] | None = None,
        raw_namespaces: list[dict[str, str]] | None = None, caps: Iterable[str] = ()) -> Scenario:
    """Run script in a busybox container with these namespaces and settings; see the module docstring."""
    return Scenario("ns.run", {
        "script": PRELUDE + script, "namespaces": list(namespaces),
        "user_ns": dict(user_ns) if user_ns is not None else None, "hostname": hostname,
        "domainname": domainname, "readonly_root": readonly_root, "host": list(host),
        "join": dict(join) if join is not None else None, "raw_namespaces": raw_namespaces,
        "caps": list(caps),
    })


def lines(seen: Mapping[str, Any]) -> dict[str, str]:
    """The container's `key=value` output lines as a dict (the last one of a key wins)."""
    found: dict[str, str] = {}
    for line in str(seen.get("stdout") or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found[key.strip()] = value.strip()
    return found
