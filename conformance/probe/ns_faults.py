"""Each namespaces clause's teeth: the reference runtime's faulty behaviour that must break its test.

The runtime (conformance/ref/runtime.py) knows its faults by behaviour (its `faults` keyword), never by
clause; this table maps a clause to one, so `conformance run --faults --impl ref` shows each namespaces
test failing against a runtime that does that one thing wrong. drivers/ref.py lists the same entries.
"""

from __future__ import annotations

#: clause ID -> (behaviour of the faulty runtime, what it does wrong that the clause's test observes).
NS_FAULTS: dict[str, tuple[str, str]] = {
    "NS-GEN-001": ("shared-ipc-namespace", "the container's ipc namespace is the host's"),
    "NS-GEN-002": ("unlisted-namespaces-created", "network, ipc, uts and cgroup are new although not listed"),
    "NS-GEN-003": ("namespace-path-ignored", "a new network namespace instead of the host's one named by path"),
    "NS-GEN-004": ("duplicate-namespaces-accepted", "runs the container although uts is listed twice"),
    "NS-GEN-005": ("namespace-type-unchecked", "runs the container with a new ipc namespace for a mnt path"),
    "NS-PID-001": ("no-pid-namespace", "the shell's $$ is its host PID, /proc/1 is the host's init"),
    "NS-PID-002": ("no-pid-namespace", "/proc lists every host process, the probe's PID included"),
    "NS-PID-003": ("no-pid-namespace", "kill -0 of the probe's PID succeeds"),
    "NS-PID-004": ("no-pid-namespace", "the background sleep outlives the shell"),
    "NS-PID-005": ("no-pid-namespace", "the shell's parent is the runtime, not 0"),
    "NS-MNT-001": ("propagation-left-shared", "the tmpfs mounted on /chan/inner shows on the host"),
    "NS-MNT-002": ("propagation-left-shared", "the host's mount on /chan/late shows inside"),
    "NS-MNT-003": ("chroot-instead-of-pivot-root", "the init's root, seen from the host, is the rootfs path"),
    "NS-MNT-004": ("old-root-left-mounted", "the host's mounts stay in the container's mount table"),
    "NS-MNT-005": ("no-default-mounts", "no devpts on /dev/pts, no tmpfs on /dev/shm"),
    "NS-MNT-006": ("readonly-root-ignored", "touch /conformance-x succeeds"),
    "NS-MNT-007": ("no-masked-paths", "/proc/timer_list reads its real content"),
    "NS-MNT-008": ("no-masked-paths", "/sys/firmware lists its entries"),
    "NS-MNT-009": ("no-readonly-paths", "writing /proc/sys/kernel/domainname succeeds"),
    "NS-MNT-010": ("old-root-left-mounted", "the host-side marker is found below the old root"),
    "NS-UTS-001": ("shared-uts-namespace", "the hostname is set on the host (the probe puts it back)"),
    "NS-UTS-002": ("shared-uts-namespace", "the domainname is set on the host (the probe puts it back)"),
    "NS-UTS-003": ("shared-uts-namespace", "the rename inside renames the host (the probe puts it back)"),
    "NS-IPC-001": ("shared-ipc-namespace", "the host's shared memory key is listed"),
    "NS-IPC-002": ("shared-ipc-namespace", "the mqueue mount lists the host's queue"),
    "NS-IPC-003": ("shared-ipc-namespace", "the host's message queue key is listed"),
    "NS-NET-001": ("shared-net-namespace", "the host's interfaces are listed"),
    "NS-NET-002": ("shared-net-namespace", "the host's abstract socket is listed"),
    "NS-NET-003": ("shared-net-namespace", "the host's TCP listener is listed"),
    "NS-USER-001": ("no-uid-map", "no maps are written: the container cannot start"),
    "NS-USER-002": ("no-uid-map", "no maps are written: the container cannot start"),
    "NS-USER-003": ("no-uid-map", "no maps are written: the container cannot start"),
    "NS-USER-004": ("no-uid-map", "no maps are written: the container cannot start"),
    "NS-USER-005": ("no-uid-map", "no maps are written: the container cannot start"),
    "NS-CG-001": ("no-cgroup-namespace", "/proc/self/cgroup shows the host's cgroup paths"),
    "NS-CG-002": ("no-cgroup-namespace", "the cgroup2 mount shows the host's hierarchy (v2 hosts)"),
}

#: clause ID -> behaviour, as the probe passes it to run_bundle.
FAULT_BEHAVIOURS: dict[str, str] = {clause: behaviour for clause, (behaviour, _what) in NS_FAULTS.items()}
