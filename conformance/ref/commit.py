"""Turn an overlay upper directory into an OCI layer, as `docker commit` and `buildah commit` do.

The upper dir of a container already is a changeset, written in overlayfs's own forms; the OCI forms
differ only for deletions (overlayfs.rst "whiteouts and opaque directories"; layer.md § Whiteouts):

- a character device 0/0 named `x` is a whiteout: it becomes the empty file `.wh.x` (mode 0600, as
  moby's ConvertWrite writes it);
- a directory with the opaque xattr (`trusted.overlay.opaque` or, with userxattr, `user.overlay.opaque`,
  value `y`) hides everything below it: it becomes the directory entry followed by `dir/.wh..wh..opq`,
  which takes the directory's mode, owner and time (moby does the same);
- every other entry goes in as it is, with mode, owner, mtime, symlink target, device numbers and its
  xattrs, but never overlayfs's own (`*.overlay.*`): they describe the store, not the image.

Two upper-dir states cannot be exported by tarring the upper alone, and are refused with an error
that says so rather than exported wrong (moby PR #34342 stopped using the upper directly for them):
a file with `overlay.metacopy` (its data is still in a lower layer) and a directory with
`overlay.redirect` (a renamed directory whose content lives under its old name below). A diff of the
merged view against the image (ref.diff) is the way to export those.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile

from conformance.ref.diff import read_node, tar_header, whiteout_header
from conformance.ref.errors import LayerError
from conformance.ref.layers import OPAQUE, WHITEOUT

OVERLAY_PREFIXES = ("trusted.overlay.", "user.overlay.")


def _overlay_xattr(path: str, name: str) -> bytes | None:
    for prefix in OVERLAY_PREFIXES:
        try:
            return os.getxattr(path, prefix + name, follow_symlinks=False)
        except OSError:
            continue
    return None


def upper_to_layer(upper: str | os.PathLike[str]) -> bytes:
    """The layer tar for an upper dir: entries in byte order, directories before their children."""
    root = os.fspath(upper)
    out = io.BytesIO()
    links: dict[tuple[int, int], str] = {}
    notes: list[str] = []
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(dirs + files):
                full = os.path.join(directory, name)
                relative = os.path.relpath(full, root)
                info = os.lstat(full)
                if name.startswith(WHITEOUT):
                    raise LayerError(f"{relative}: a name starting with {WHITEOUT} cannot be exported (layer.md: "
                                     "such names are whiteouts)")
                if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                    head, _, base = relative.rpartition("/")
                    tar.addfile(whiteout_header(f"{head}/{WHITEOUT}{base}" if head else f"{WHITEOUT}{base}"))
                    continue
                if stat.S_ISREG(info.st_mode) and _overlay_xattr(full, "metacopy") is not None:
                    raise LayerError(f"{relative}: a metadata-only copy-up (overlay.metacopy): its data is in a lower "
                                     "layer; export a diff of the merged view instead")
                if stat.S_ISDIR(info.st_mode) and _overlay_xattr(full, "redirect") is not None:
                    raise LayerError(f"{relative}: a redirected directory (overlay.redirect): its content is under "
                                     "its old name below; export a diff of the merged view instead")
                node = read_node(full, notes, relative)
                header = tar_header(relative, node)
                header.pax_headers = {key: value for key, value in header.pax_headers.items()
                                      if ".overlay." not in key}
                if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                    first = links.setdefault((info.st_dev, info.st_ino), relative)
                    if first != relative:  # a second name of a file already in the layer
                        header.type, header.linkname, header.size = tarfile.LNKTYPE, first, 0
                        tar.addfile(header)
                        continue
                if stat.S_ISREG(info.st_mode):
                    with open(full, "rb") as data:
                        tar.addfile(header, data)
                else:
                    tar.addfile(header)
                if stat.S_ISDIR(info.st_mode) and _overlay_xattr(full, "opaque") == b"y":
                    marker = whiteout_header(f"{relative}/{OPAQUE}")  # with its directory's mode and owner,
                    marker.mode, marker.uid, marker.gid, marker.mtime = (  # as moby's ConvertWrite writes it
                        header.mode, header.uid, header.gid, header.mtime)
                    tar.addfile(marker)
    return out.getvalue()
