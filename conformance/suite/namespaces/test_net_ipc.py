"""NS-NET-* and NS-IPC-*: a new network namespace holds only lo; SysV and POSIX IPC objects are per namespace."""

from __future__ import annotations

import pytest

from conformance.scenarios import namespaces as ns
from conformance.suite.namespaces import ran
from conformance.target import Target


@pytest.mark.clause("NS-NET-001")
def test_new_network_namespace_has_only_lo(target: Target) -> None:
    """The interfaces in /proc/net/dev MUST be exactly lo (and the kernel's own fallback tunnels, if any)."""
    script = "echo ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ,)"
    said = ran(target, target.observe(ns.run(script)))
    listed = [name for name in str(said.get("ifaces") or "").split(",") if name]
    if set(listed) & ns.FALLBACK_TUNNELS:
        target.note("fallback tunnels of the kernel, not counted", sorted(set(listed) & ns.FALLBACK_TUNNELS))
    target.expect("interfaces", ["lo"], [name for name in listed if name not in ns.FALLBACK_TUNNELS],
                  hint="network_namespaces(7): a new one has only lo")


@pytest.mark.clause("NS-NET-002")
def test_host_abstract_socket_is_not_reachable(target: Target) -> None:
    """The host listens on an abstract unix socket: it MUST NOT be in the container's /proc/net/unix."""
    script = "grep -q \"${ABSTRACT#@}\" /proc/net/unix && echo abstract=visible || echo abstract=absent"
    said = ran(target, target.observe(ns.run(script, host=["sockets"])))
    target.expect("the host's abstract socket in /proc/net/unix", "absent", said.get("abstract"),
                  hint="abstract unix sockets belong to a network namespace (unix(7))")


@pytest.mark.clause("NS-NET-003")
def test_host_loopback_listener_is_not_reachable(target: Target) -> None:
    """The host listens on TCP 127.0.0.1:PORT: the container's /proc/net/tcp MUST NOT list that listener."""
    script = ("port=$(printf '%04X' $TCP_PORT); grep -q \":$port 00000000:0000 0A\" /proc/net/tcp "
              "&& echo tcp=visible || echo tcp=absent")
    said = ran(target, target.observe(ns.run(script, host=["sockets"])))
    target.expect("the host's TCP listener in /proc/net/tcp", "absent", said.get("tcp"),
                  hint="the container's 127.0.0.1 is its own lo: no traffic is sent to find out")


@pytest.mark.clause("NS-IPC-001")
def test_host_sysv_shared_memory_is_not_visible(target: Target) -> None:
    """The host made a SysV shared memory segment: its key MUST NOT be in the container's /proc/sysvipc/shm."""
    script = ("echo segments=$(tail -n +2 /proc/sysvipc/shm | wc -l); "
              "awk -v k=$SHM_KEY 'NR>1 && $1==k {f=1} END {print \"key=\" (f ? \"visible\" : \"absent\")}' "
              "/proc/sysvipc/shm")
    said = ran(target, target.observe(ns.run(script, host=["sysv-shm"])))
    target.expect("the host's key", "absent", said.get("key"), hint="ipc_namespaces(7)")


@pytest.mark.clause("NS-IPC-002")
def test_host_posix_message_queue_is_not_visible(target: Target) -> None:
    """The host made a POSIX message queue: an mqueue mount made inside MUST NOT list it."""
    script = ("mkdir -p /tmp/mq && mount -t mqueue conformance /tmp/mq && echo mounted=yes; "
              "[ -e /tmp/mq/$MQ_NAME ] && echo queue=visible || echo queue=absent")
    said = ran(target, target.observe(ns.run(script, host=["mqueue"], caps=["CAP_SYS_ADMIN"])))
    target.expect("mqueue mount inside", "yes", said.get("mounted"))
    target.expect("the host's queue", "absent", said.get("queue"),
                  hint="an mqueue mount shows the queues of the mounter's IPC namespace (mq_overview(7))")


@pytest.mark.clause("NS-IPC-003")
def test_host_sysv_message_queue_is_not_visible(target: Target) -> None:
    """The host made a SysV message queue: its key MUST NOT be in the container's /proc/sysvipc/msg."""
    script = ("awk -v k=$MSG_KEY 'NR>1 && $1==k {f=1} END {print \"key=\" (f ? \"visible\" : \"absent\")}' "
              "/proc/sysvipc/msg")
    said = ran(target, target.observe(ns.run(script, host=["sysv-msg"])))
    target.expect("the host's key", "absent", said.get("key"), hint="ipc_namespaces(7)")
