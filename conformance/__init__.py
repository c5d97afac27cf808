"""container-conformance: checks container primitives against their specs on real hosts.

This module stays import-free: the probe zip carries it to hosts that have only the standard library.
"""

__version__ = "0.1.0"

#: Everything a run creates on a host (scratch dirs, mounts, cgroups, netns, containers) starts with this,
#: so that `conformance clean` can find what a killed run left behind.
PREFIX = "conformance-"
