"""Reference implementations of the container primitives: small, readable, and the suite's oracle.

Nothing here imports from the rest of the package (it is shipped to hosts in the probe zip, and it
must not depend on how it is tested).

Layer stacking (OCI image layout, digests, safe apply with whiteouts, diff): digest, streams, oci,
layout, tarsafe, tarread, attrs, layers, image, diff. The overlay model, the runtime and the cgroup
manager arrive with their issues.
"""
