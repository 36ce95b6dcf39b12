"""Growing a restored filesystem to fill its (larger) partition, with the filesystem's own tool.

ext2/3/4 and NTFS grow unmounted (``resize2fs`` after the ``e2fsck -f`` it insists on;
``ntfsresize``, which also schedules a chkdsk for Windows' next boot); xfs and btrfs grow only
while mounted, so they are mounted under /run/hourglass/grow for the moment it takes.
FAT and exFAT have no in-place grow tool in Debian: their partition grows, the filesystem
keeps its size.
"""

from __future__ import annotations

import os
from pathlib import Path

from imaging.errors import ToolFailed
from imaging.mounts.drivers import Mode
from imaging.mounts.mount import mount, unmount
from imaging.process import run

GROW_ROOT = Path("/run/hourglass/grow")


def can_grow(fstype: str) -> bool:
    return fstype in ("ext2", "ext3", "ext4", "xfs", "btrfs", "ntfs")


def grow_filesystem(device: str, fstype: str) -> str:
    """Grow the filesystem on ``device`` to the device's size; returns the tool used."""
    if fstype in ("ext2", "ext3", "ext4"):
        check = run(["e2fsck", "-f", "-p", device], check=False)
        if check.returncode > 1:  # 1: errors fixed; more: not safe to resize
            raise ToolFailed(
                f"e2fsck -f -p {device} found problems it did not fix (exit code "
                f"{check.returncode}); the filesystem was not grown."
            )
        run(["resize2fs", device])
        return "resize2fs"
    if fstype == "ntfs":
        run(["ntfsresize", "--force", "--no-progress-bar", device], input=b"")
        return "ntfsresize"
    if fstype in ("xfs", "btrfs"):
        where = str(GROW_ROOT / os.path.basename(device))
        mount(device, fstype, where, Mode.READ_WRITE)
        try:
            if fstype == "xfs":
                run(["xfs_growfs", where])
                return "xfs_growfs"
            run(["btrfs", "filesystem", "resize", "max", where])
            return "btrfs filesystem resize"
        finally:
            unmount(where, remove=True)
    raise ToolFailed(f"Hourglass has no tool to grow {fstype or 'this'} filesystem.")
