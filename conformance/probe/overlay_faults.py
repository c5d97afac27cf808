"""Each overlay clause's teeth: the reference model's faulty behaviour that must break the clause's test.

The model (conformance/ref/overlay.py) knows its faults by behaviour, never by clause; this table maps a
clause to one, so that `conformance run --faults --impl ref` shows each overlay test failing against a
model that does that one thing wrong. It lives with the probe (stdlib data, shipped in the probe bundle)
because the probe runs the model; drivers/ref.py lists the same entries for the report.
"""

from __future__ import annotations

#: clause ID -> (behaviour of the faulty model, what it does wrong that the clause's test observes).
OVERLAY_FAULTS: dict[str, tuple[str, str]] = {
    "OVL-LOOKUP-001": ("lower-shadows-upper", "reads the lower a instead of the upper a that hides it"),
    "OVL-LOOKUP-002": ("lower-shadows-upper",
                       "shows the lower directory x (with x/child) over the upper file x, and the lower file y "
                       "over the upper directory y"),
    "OVL-LOOKUP-003": ("lower-shadows-upper", "d/both, which both layers hold, reads the lower content"),
    "OVL-LOOKUP-004": ("lower-shadows-upper",
                       "the merged directory d takes the lower directory's mode 0700, uid 1 and mtime, not the "
                       "upper's (the fault must apply to a merged directory's attributes too)"),
    "OVL-LOOKUP-005": ("lowers-bottom-first", "stacks lowerdir right to left reversed: f reads l2 and g reads l2"),
    "OVL-WHITEOUT-001": ("whiteout-ignored", "the lower a shows through the upper whiteout: stat a works"),
    "OVL-WHITEOUT-002": ("readdir-shows-whiteouts", "readdir / lists the whiteouts a and stray beside b"),
    "OVL-WHITEOUT-003": ("whiteout-ignored", "the lower directory d and its subtree show through the whiteout d"),
    "OVL-WHITEOUT-004": ("whiteout-ignored",
                         "the middle lower layer's whiteout a does not hide the bottom layer's a (the fault must "
                         "apply to whiteouts in lower layers, not only in the upper)"),
    "OVL-WHITEOUT-005": ("no-whiteout-on-unlink", "unlink leaves no 0/0 device in upper: f, h, s, p reappear"),
    "OVL-WHITEOUT-006": ("unlink-leaves-upper-file", "unlink f leaves upper/f in place, so merged still shows f"),
    "OVL-WHITEOUT-007": ("whiteout-only-for-lower-entries",
                         "unlinking the copied-up a leaves no whiteout, so the lower a shows again"),
    "OVL-WHITEOUT-008": ("whiteout-ignored", "read, write, chmod... of the whited-out a reach the lower a"),
    "OVL-WHITEOUT-009": ("no-whiteout-on-unlink",
                         "after unlink the lower f, s, p reappear, so create/symlink/mknod fail with EEXIST"),
    "OVL-OPAQUE-001": ("opaque-ignored", "the opaque upper d still lists the lower d/a and d/sub"),
    "OVL-OPAQUE-002": ("opaque-ignored",
                       "the middle layer's opaque d does not hide the bottom layer's d/bottom (the fault must "
                       "apply to opaque directories in lower layers too)"),
    "OVL-OPAQUE-003": ("mkdir-without-opaque", "mkdir d over the whiteout makes a plain dir: d/a shows again"),
    "OVL-OPAQUE-004": ("copy-up-keeps-opaque", "copying up d from the opaque middle layer copies overlay.opaque=y"),
    "OVL-READDIR-001": ("readdir-duplicates", "readdir lists f and d once per layer that holds them"),
    "OVL-READDIR-002": ("readdir-shows-whiteouts", "readdir lists whited-out names (b, c, e, stray) stat cannot find"),
    "OVL-READDIR-003": ("readdir-stale-after-change",
                        "the second readdir of d repeats the first listing (a, b), missing c and keeping a"),
    "OVL-RMDIR-001": ("rmdir-ignores-lower-children", "rmdir d and rmdir e succeed although lower children show"),
    "OVL-RMDIR-002": ("no-whiteout-on-unlink",
                      "d/a and d/b reappear after their unlink, so rmdir d fails with ENOTEMPTY"),
    "OVL-COPYUP-001": ("no-copy-up-on-write", "the append does not copy the lower data up: upper/f is not abcdef"),
    "OVL-COPYUP-002": ("copy-up-loses-mode", "copied-up f and g get a default mode, not 0640 and 0755"),
    "OVL-COPYUP-003": ("copy-up-loses-owner", "copied-up f is owned by 0:0, not 1000:1001"),
    "OVL-COPYUP-004": ("copy-up-loses-mtime", "copied-up f gets the copy time as mtime, not 1500000000"),
    "OVL-COPYUP-005": ("copy-up-loses-xattrs", "copied-up f has no user.colour"),
    "OVL-COPYUP-006": ("copy-up-loses-mode",
                       "the parent directories a and a/b are copied up with a default mode, not 0750 and 0700 (the "
                       "fault must apply to parent directories too)"),
    "OVL-COPYUP-007": ("copy-up-on-read", "reading f, d/g or through s copies them up, so upper is not empty"),
    "OVL-COPYUP-008": ("truncate-without-copy-up", "truncate does not copy f up: upper/f is missing"),
    "OVL-COPYUP-009": ("no-copy-up-on-metadata-change",
                       "chmod/chown/utimes of lower files change nothing in upper: upper/f1, f2, f3 are missing"),
    "OVL-COPYUP-010": ("copy-up-loses-owner",
                       "the parent directory d is copied up owned by 0:0, not 3:3 (the fault must apply to parent "
                       "directories too)"),
    "OVL-META-001": ("metacopy-copies-data", "with metacopy=on chmod copies the data up too"),
    "OVL-META-002": ("metacopy-kept-after-write",
                     "the write-open of a metacopy file keeps overlay.metacopy (and so the upper data is not whole)"),
    "OVL-META-003": ("metacopy-when-off", "with metacopy=off chmod still makes a metadata-only copy"),
    "OVL-LINK-001": ("link-without-copy-up",
                     "link(a, b) copies a's data to a new upper b and leaves a in the lower: one link each"),
    "OVL-LINK-002": ("copy-up-on-read", "reading d/a through the new symlink copies d/a up"),
    "OVL-LINK-003": ("index-ignored", "with index=on copy-up still breaks the lower hard link: b keeps the old data"),
    "OVL-RENAME-001": ("rename-dir-without-redirect",
                       "rename of the lower a/d succeeds (moved without a redirect) instead of EXDEV"),
    "OVL-RENAME-002": ("rename-dir-without-redirect",
                       "rename of the lower a/d writes no overlay.redirect, so b/e loses its lower child x"),
    "OVL-RENAME-003": ("rename-dir-always-exdev", "rename of the directory made through the merged view fails EXDEV"),
    "OVL-RENAME-004": ("no-whiteout-on-rename",
                       "renaming the lower a leaves no whiteout at a, so the lower a shows again"),
    "OVL-RENAME-005": ("rename-dir-without-redirect",
                       "the rename of the deep directory succeeds without a redirect instead of EXDEV"),
    "OVL-RENAME-006": ("redirect-followed-with-nofollow",
                       "with redirect_dir=nofollow the upper e's redirect to /d is followed: e lists secret"),
    "OVL-MOUNT-001": ("accept-bad-options", "mounts userxattr with redirect_dir=on and follow"),
    "OVL-MOUNT-002": ("accept-bad-options", "mounts userxattr with metacopy=on"),
    "OVL-MOUNT-003": ("accept-bad-options", "mounts metacopy=on with redirect_dir off, follow or nofollow"),
    "OVL-MOUNT-004": ("accept-bad-options", "mounts with redirect_dir=sideways, metacopy=maybe and the like"),
    "OVL-MOUNT-005": ("rename-dir-without-redirect",
                      "on a host whose module redirect_dir is N the lower a/d is renamed instead of EXDEV; where "
                      "it is Y, b/e gets no overlay.redirect"),
    "OVL-NONSTD-001": ("rename-dir-without-redirect", "rename of the merged d succeeds instead of EXDEV"),
    "OVL-NONSTD-002": ("hardlinks-kept-without-index", "with index=off the copy-up keeps the link: b reads data+"),
    "OVL-DATA-001": ("data-only-merged", "the data-only layer's only-data and blobs show in the merged root"),
    "OVL-DATA-002": ("metacopy-redirect-ignored",
                     "m reads as its own zero bytes instead of the blob, and the copied-up n holds zeros + \"+\""),
    "OVL-DATA-003": ("accept-bad-options", "mounts lowerdir=::data, using the data-only layer as the lower one"),
}
