"""Reference implementations of the container primitives: small, readable, and the suite's oracle.

Nothing here imports from the rest of the package (it is shipped to hosts in the probe zip, and it
must not depend on how it is tested).

Layer stacking (OCI image layout, digests, safe apply with whiteouts, diff): digest, streams, oci,
layout, tarsafe, tarread, attrs, layers, image, diff; the layer store and builder: store, commit,
containerfile, build, buildcopy, buildcache. The overlay model: overlay, ovloptions, ovltree, ovlmount,
ovlops. The runtime: runspec, speclinux, specread, defaultspec, mountopts, nsapi, idmap, credentials,
procexec, stopsignals, nsinit, rootfs, runtime (runtime_cli for people), and container (an image
run in it). The cgroup manager: cglayout (v1, v2 or hybrid, and where a cgroupsPath lands), cglimits
(linux.resources and the files each version wants), cgmanager (a container's cgroup: create, add, remove),
cgfreezer, cgstats, and runflags (docker run's resource flags).
"""
