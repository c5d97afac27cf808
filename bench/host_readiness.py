"""Host readiness: one batched probe call vs the testinfra way (one shell command per check).

Both sides do the same work on the same host: list filesystems, mount overlay over two lowers,
create each namespace type, write and read back cgroup limits. The probe side is what the suite does;
the peer side is what a testinfra test suite does with util-linux and coreutils, one host.run() each.
Prints medians and the ratio (peer / probe); ratios, not absolute times, are what to compare.

Usage: python bench/host_readiness.py [--hosts local://,ssh://node] [--ssh-config FILE] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from conformance.hosts import resolve
from conformance.scenarios import host as scenarios
from conformance.transport import ProbeClient

PEER_SCRIPT = [
    ["grep", "-qw", "overlay", "/proc/filesystems"],
    ["sh", "-c", "d=$(mktemp -d /tmp/conformance-bench-XXXX) && mount -t tmpfs conformance-bench $d && "
     "mkdir $d/l1 $d/l2 $d/u $d/w $d/m && echo a > $d/l1/a && echo b > $d/l2/b && "
     "mount -t overlay conformance-bench -o lowerdir=$d/l1:$d/l2,upperdir=$d/u,workdir=$d/w $d/m && "
     "cat $d/m/a $d/m/b && umount $d/m && umount $d && rmdir $d"],
    *[["unshare", flag, "true"] for flag in ("--mount", "--uts", "--ipc", "--net", "--user", "--cgroup")],
    ["unshare", "--pid", "--fork", "true"],
    ["sh", "-c", "c=/sys/fs/cgroup/memory/conformance-bench; [ -d /sys/fs/cgroup/memory ] || "
     "c=/sys/fs/cgroup/conformance-bench; mkdir $c && cat $c/cgroup.procs >/dev/null; rmdir $c"],
    ["sh", "-c", "c=/sys/fs/cgroup/pids/conformance-bench; [ -d /sys/fs/cgroup/pids ] || "
     "c=/sys/fs/cgroup/conformance-bench; mkdir $c && echo 42 > $c/pids.max && cat $c/pids.max; rmdir $c"],
]


def probe_side(client: ProbeClient) -> float:
    """The suite's way: every scenario in one probe call."""
    batch = [scenarios.filesystems(), scenarios.overlay_merge(),
             *[scenarios.namespace(k) for k in ("mnt", "uts", "ipc", "net", "user", "cgroup", "pid")],
             scenarios.cgroup_procs(), scenarios.cgroup_limit("pids")]
    started = time.perf_counter()
    client.call(batch, "kernel")
    return time.perf_counter() - started


def peer_side(client: ProbeClient) -> float:
    """The testinfra way: one command per check."""
    started = time.perf_counter()
    for argv in PEER_SCRIPT:
        client.host.run(argv, 60)
    return time.perf_counter() - started


def main() -> None:
    """Run both sides --repeat times and print medians and the ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", default="local://")
    parser.add_argument("--ssh-config", help="ssh config for ssh:// hosts")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for host in resolve(args.hosts.split(","), ssh_config=args.ssh_config):
        client = ProbeClient(host, "bench")
        client.ensure()
        probe_side(client)  # warm-up: page cache, bundle upload
        probe = statistics.median(probe_side(client) for _ in range(args.repeat))
        peer = statistics.median(peer_side(client) for _ in range(args.repeat))
        client.remove_bundle()
        print(f"{host.name}: probe batch {probe * 1000:.0f} ms, one command per check {peer * 1000:.0f} ms, "
              f"ratio peer/probe {peer / probe:.2f}")


if __name__ == "__main__":
    main()
