"""Helper programs of the project itself, not shipped with the package.

guest.py builds and boots a pure cgroup v2 QEMU guest (its parts in guest_*.py); bed.py makes a
multi-host test bed on one machine (its parts in bed_*.py); commandline.py is what both command lines
share.
"""
