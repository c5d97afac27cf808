"""Reference implementations of the container primitives: small, readable, and the suite's oracle.

Nothing here imports from the rest of the package (it is shipped to hosts in the probe zip, and it
must not depend on how it is tested). The area issues add layers.py, overlay.py, runtime.py and
cgroups.py.
"""
