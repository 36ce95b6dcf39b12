"""Which driver mounts which filesystem, read-only and without replaying journals."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from imaging.process import run

# fstype -> (kernel filesystem name, options). Journals are never replayed: a replay would
# need writes, and the snapshot must be shown as it was stored.
KERNEL = {
    "ext2": ("ext4", "ro,noload"),
    "ext3": ("ext4", "ro,noload"),
    "ext4": ("ext4", "ro,noload"),
    # nouuid: two snapshots of one xfs filesystem can be mounted at once.
    "xfs": ("xfs", "ro,norecovery,nouuid"),
    # rescue=nologreplay (Linux 5.9+); the bare `nologreplay` is gone from recent kernels.
    "btrfs": ("btrfs", "ro,rescue=nologreplay"),
    "vfat": ("vfat", "ro"),
    "exfat": ("exfat", "ro"),
    "hfsplus": ("hfsplus", "ro"),
    "iso9660": ("iso9660", "ro"),
    "squashfs": ("squashfs", "ro"),
}

# FUSE drivers read the view file directly, except exfat-fuse, which insists on a block
# device (it mounts as fuseblk): it gets a read-only loop device like the kernel drivers.
FUSE_NEEDS_BLOCK_DEVICE = {"exfat"}
FUSE = {
    "ntfs": ["ntfs-3g", "-o", "ro"],
    "vfat": ["fusefat", "-o", "ro"],
    "exfat": ["mount.exfat-fuse", "-o", "ro"],
}

NOT_FILESYSTEMS = {"swap", "crypto_LUKS", "LVM2_member", "linux_raid_member", "BitLocker"}

ALIASES = {"fat": "vfat", "fat12": "vfat", "fat16": "vfat", "fat32": "vfat", "msdos": "vfat"}


@dataclass(frozen=True)
class Driver:
    """How to mount one filesystem: a kernel driver on a loop device or a FUSE program."""

    fstype: str
    kernel: str | None = None
    options: str = "ro"
    fuse: tuple[str, ...] = ()

    @property
    def needs_loop(self) -> bool:
        return self.kernel is not None or self.fstype in FUSE_NEEDS_BLOCK_DEVICE

    def describe(self) -> str:
        if self.kernel:
            return f"{self.kernel} ({self.options})"
        return " ".join(self.fuse)


def kernel_filesystems() -> set[str]:
    """The filesystems the running kernel has loaded (or built in)."""
    try:
        text = Path("/proc/filesystems").read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in text.splitlines() if line.strip()}


def kernel_has(name: str) -> bool:
    """True when the kernel can mount ``name``: loaded, built in, or a module that loads.

    /proc/filesystems lists only what is loaded: on the appliance, whose root is a squashfs,
    ext4 is a module nobody has needed yet. modprobe loads it (where there is a modprobe).
    """
    if name in kernel_filesystems():
        return True
    modprobe = shutil.which("modprobe") or next(
        (p for p in ("/usr/sbin/modprobe", "/sbin/modprobe") if os.path.exists(p)), None
    )
    if modprobe is None:
        return False
    run([modprobe, "-q", name], check=False)
    return name in kernel_filesystems()


def normalize(fstype: str) -> str:
    fstype = fstype.strip()
    return ALIASES.get(fstype.lower(), fstype)


def detect(path: str) -> str | None:
    """The filesystem type ``blkid -p`` finds on ``path``, or None."""
    result = run(["blkid", "-p", "-o", "value", "-s", "TYPE", path], check=False)
    text = result.stdout.decode(errors="replace").strip()
    return normalize(text) if result.returncode == 0 and text else None


def driver_for(fstype: str) -> Driver | None:
    """The driver that mounts ``fstype`` here: the kernel's where it has it, else FUSE."""
    fstype = normalize(fstype)
    if fstype == "ntfs":  # ntfs-3g, not the kernel's ntfs3: it is the tested, forgiving one
        return Driver(fstype, fuse=tuple(FUSE["ntfs"]))
    kernel = KERNEL.get(fstype)
    if kernel is not None and kernel_has(kernel[0]):
        return Driver(fstype, kernel=kernel[0], options=kernel[1])
    if fstype in FUSE:  # mounting names the package when the program is missing
        return Driver(fstype, fuse=tuple(FUSE[fstype]))
    return None
