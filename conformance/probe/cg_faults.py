"""Each cgroups clause's teeth: the reference runtime's faulty behaviour that must break its test.

The runtime and its cgroup manager (conformance/ref/runtime.py, conformance/ref/cgmanager.py) know their
faults by behaviour; this table maps a clause to one, so `conformance run --faults --impl ref` shows each
cgroups test failing against a runtime that does that one thing wrong. drivers/ref.py lists the same.
"""

from __future__ import annotations

#: clause ID -> (behaviour of the faulty runtime, what it does wrong that the clause's test observes).
CG_FAULTS: dict[str, tuple[str, str]] = {
    "CG-LIFE-001": ("not-moved-in", "the container's shell stays in the runtime's cgroup"),
    "CG-LIFE-002": ("not-moved-in", "/proc/<init>/cgroup shows the runtime's cgroup, not cgroupsPath"),
    "CG-LIFE-003": ("not-moved-in", "both runs land in the runtime's cgroup instead of cgroupsPath"),
    "CG-LIFE-004": ("cgroup-left-behind", "the cgroup dirs stay after the container exited"),
    "CG-LIFE-005": ("stragglers-left", "the background sleep outlives the container in its cgroup"),
    "CG-LIFE-006": ("cgroupns-before-join", "the namespace's root is the runtime's cgroup: the write moves "
                                            "the shell out of its limits"),
    "CG-MEM-001": ("memory-limit-wrong-file", "the limit lands in memory.high / the soft limit"),
    "CG-MEM-002": ("memory-limit-wrong-file", "the hard limit stays unlimited"),
    "CG-MEM-003": ("reservation-ignored", "the soft limit / memory.low stays unset"),
    "CG-MEM-004": ("swap-not-converted", "swap is written as if it were swap alone (v1) or memory+swap (v2)"),
    "CG-MEM-005": ("swap-not-converted", "swap equal to the limit leaves the container swap (v2) or 2x (v1)"),
    "CG-MEM-006": ("not-moved-in", "the hog allocates in the runtime's cgroup and is never killed"),
    "CG-MEM-007": ("limit-and-reservation-swapped", "the small reservation becomes the hard limit: the "
                                                    "process is killed"),
    "CG-MEM-008": ("unified-ignored", "memory.high is never written: no high events"),
    "CG-MEM-009": ("not-moved-in", "the container's pages are charged to the runtime's cgroup"),
    "CG-PID-001": ("pids-limit-ignored", "pids.max stays max"),
    "CG-PID-002": ("pids-zero-unlimited", "a limit of 0 becomes max"),
    "CG-PID-003": ("pids-limit-ignored", "every fork succeeds"),
    "CG-PID-004": ("pids-limit-ignored", "no fork is refused, pids.events max stays 0"),
    "CG-PID-005": ("not-moved-in", "the container's cgroup counts none of its processes"),
    "CG-CPU-001": ("cpu-period-ignored", "the period is 100000 whatever the config says"),
    "CG-CPU-002": ("period-clamped", "a period of 100 µs is clamped to 1000 and the container runs"),
    "CG-CPU-003": ("wrong-shares-conversion", "v2: the linear conversion (1024 -> 39); v1: the weight "
                                              "written as shares"),
    "CG-CPU-004": ("cpu-quota-ignored", "no quota is written for --cpus"),
    "CG-CPU-005": ("cpu-quota-ignored", "the hog gets a whole CPU"),
    "CG-CPU-006": ("cpu-quota-ignored", "nothing is throttled"),
    "CG-CPU-007": ("not-moved-in", "the container's CPU time is charged to the runtime's cgroup"),
    "CG-CPU-008": ("cpuset-ignored", "the container may run on every CPU"),
    "CG-FRZ-001": ("freeze-ignored", "pause returns without freezing: the counter keeps counting"),
    "CG-FRZ-002": ("freeze-ignored", "the freezer never reports frozen"),
    "CG-OCI-001": ("unified-ignored", "pids.max stays max"),
    "CG-OCI-002": ("unified-ignored", "memory.oom.group stays 0"),
    "CG-OCI-003": ("unified-ignored", "the container runs although the controller is missing"),
}

#: clause ID -> behaviour, as the probe passes it to run_bundle and to the cgroup manager.
CG_BEHAVIOURS: dict[str, str] = {clause: behaviour for clause, (behaviour, _what) in CG_FAULTS.items()}
