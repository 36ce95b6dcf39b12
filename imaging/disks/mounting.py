"""Mounting a partition for a moment: to look for a repository (read-only, without replaying
a journal) or to grow a filesystem whose tool works only when mounted (xfs, btrfs).

The kernel's driver is used when it has one; vfat, exFAT and NTFS fall back to their FUSE
drivers (fusefat, exfat-fuse, ntfs-3g) on kernels built without them.
"""

from __future__ import annotations

import contextlib
import os

from imaging.errors import HourglassError, ToolMissing
from imaging.process import run

MOUNTABLE = ("ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "exfat", "ntfs")

# Read-only without touching the filesystem: no journal or log replay.
READ_ONLY_OPTIONS = {
    "ext3": "ro,noload",
    "ext4": "ro,noload",
    "xfs": "ro,norecovery",
    "btrfs": "ro,rescue=nologreplay",
}
KERNEL_TYPE = {"ntfs": "ntfs3"}
FUSE_HELPERS = {"ntfs": "ntfs-3g", "exfat": "mount.exfat-fuse", "vfat": "fusefat"}
# fusefat refuses plain "rw" (exit 234, "experimental code ... add -o rw+ if you accept the
# risk"): rw+ is its only writable mode. Used where the kernel has no vfat driver.
FUSE_WRITABLE = {"vfat": "rw+"}


def kernel_supports(fstype: str) -> bool:
    from imaging.files.fstypes import kernel_has

    return kernel_has(KERNEL_TYPE.get(fstype, fstype))


def mount(device: str, fstype: str, mountpoint: str, *, read_only: bool = True) -> None:
    """Mount ``device`` at ``mountpoint`` (created if needed)."""
    os.makedirs(mountpoint, exist_ok=True)
    if kernel_supports(fstype):
        options = READ_ONLY_OPTIONS.get(fstype, "ro") if read_only else "rw"
        argv = ["mount", "-t", KERNEL_TYPE.get(fstype, fstype), "-o", options, device, mountpoint]
    elif fstype in FUSE_HELPERS:
        options = "ro" if read_only else FUSE_WRITABLE.get(fstype, "rw")
        argv = [FUSE_HELPERS[fstype], "-o", options, device, mountpoint]
    else:
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)
        raise ToolMissing(f"This system cannot mount {fstype} (no kernel or FUSE driver).")
    try:
        run(argv)
    except HourglassError:
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)
        raise


def mount_readonly(device: str, fstype: str, mountpoint: str) -> None:
    mount(device, fstype, mountpoint, read_only=True)


def unmount(mountpoint: str) -> None:
    """Unmount and remove the mount point directory."""
    run(["umount", mountpoint])
    with contextlib.suppress(OSError):
        os.rmdir(mountpoint)
