"""The kernel and initramfs the guest boots, made at build time from the image's own kernel and modules.

Under TCG the kernel's decompressor and Debian's udev-driven initramfs cost seconds of every boot: a
plain vmlinux and a busybox initramfs that loads only what finds the root do without both.
"""

from __future__ import annotations

import lzma
import struct
from collections.abc import Sequence
from pathlib import Path

from tools.guest_commands import GuestError


def _has_pvh_note(elf: bytes) -> bool:
    """Whether an ELF64 kernel has the Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, 18) QEMU needs."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:  # ELFCLASS64
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        header = phoff + index * phentsize
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", elf, header)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, pos)
            if elf[pos + 12:pos + 12 + namesz] == b"Xen\0" and note_type == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def extract_vmlinux(bzimage: Path, out: Path) -> bool:
    """Write the bzImage's payload as a plain ELF vmlinux; False when it is not an xz ELF with a PVH note.

    QEMU starts such an ELF at its PVH entry directly, so the guest skips the kernel's decompressor,
    which is slow under TCG. Debian compresses its kernels with xz (CONFIG_KERNEL_XZ) and builds them
    with CONFIG_PVH=y.
    """
    data = bzimage.read_bytes()
    start = data.find(b"\xfd7zXZ\0")
    if start < 0:
        return False
    try:
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
    except lzma.LZMAError:
        return False
    if not _has_pvh_note(elf):
        return False
    out.write_bytes(elf)
    return True


# What finds the root: the virtio disk and ext4, and the crc32c that ext4 and jbd2 ask the crypto API
# for (a soft dependency, which insmod does not follow); virtio_net so that eth0 is there when
# systemd starts (NETWORK_UNIT).
INITRAMFS_MODULES = ("crc32c_generic", "virtio_pci", "virtio_blk", "ext4", "virtio_net")
INITRAMFS_INIT = """\
#!/bin/busybox sh
# The guest's initramfs, written by tools/guest.py: load the modules that find the root, mount it,
# hand over to systemd. Debian's initramfs-tools spends some 10 s under TCG doing the same with udev.
# Exiting makes the kernel panic; with panic=-1 and QEMU's -no-reboot, QEMU then exits.
export PATH=/bin
busybox mount -t devtmpfs devtmpfs /dev
for module in $(busybox cat /modules); do busybox insmod "$module" || echo "initramfs: insmod $module failed"; done
tries=0
while [ ! -b /dev/vda ] && [ $tries -lt 200 ]; do busybox sleep 0.05; tries=$((tries + 1)); done
busybox mount -t ext4 -o rw /dev/vda /root || exit 1
busybox mount --move /dev /root/dev
exec busybox switch_root /root /sbin/init
"""


def _module_order(modules_dir: Path, wanted: Sequence[str]) -> list[Path]:
    """The module files for WANTED in an order insmod can load them (dependencies first), from modules.dep."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[Path(path).name.split(".")[0].replace("-", "_")] = path
    builtin = {Path(line).name.split(".")[0].replace("-", "_")
               for line in (modules_dir / "modules.builtin").read_text().splitlines()}
    order: list[str] = []

    def visit(path: str) -> None:
        if path not in order:
            for dep in deps.get(path, []):
                visit(dep)
            order.append(path)

    for name in wanted:
        if name in builtin:
            continue
        if name not in by_name:
            raise GuestError(f"module {name} is not in {modules_dir}/modules.dep")
        visit(by_name[name])
    if compressed := [p for p in order if not p.endswith(".ko")]:
        raise GuestError(f"compressed modules, which busybox insmod cannot load: {', '.join(compressed)}")
    return [modules_dir / p for p in order]


def _cpio(entries: Sequence[tuple[str, int, bytes]]) -> bytes:
    """A cpio archive in the kernel's initramfs format (newc): (name, mode, data) each, devices as 5:1."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        rdev = (5, 1) if mode & 0o170000 == 0o020000 else (0, 0)  # only /dev/console is a device here
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(encoded), 0)
        out += b"070701" + "".join(f"{field:08X}" for field in fields).encode() + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def make_initramfs(rootfs: Path, release: str, out: Path) -> None:
    """Write a busybox initramfs (uncompressed: the kernel unpacks it at once) that mounts /dev/vda."""
    modules = _module_order(rootfs / "lib" / "modules" / release, INITRAMFS_MODULES)
    entries = [("bin", 0o040755, b""), ("dev", 0o040755, b""), ("root", 0o040755, b""), ("m", 0o040755, b""),
               ("dev/console", 0o020600, b""), ("bin/busybox", 0o100755, (rootfs / "bin" / "busybox").read_bytes()),
               ("init", 0o100755, INITRAMFS_INIT.encode()),
               ("modules", 0o100644, "".join(f"/m/{m.name}\n" for m in modules).encode())]
    entries += [(f"m/{m.name}", 0o100644, m.read_bytes()) for m in modules]
    out.write_bytes(_cpio(entries))

