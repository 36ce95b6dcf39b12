"""Places a repository lives: partitions mounted for it, network shares, new drives."""

from __future__ import annotations

from imaging.disks.repos import repositories_in
from imaging.mounts.locations import (
    Location,
    Share,
    format_drive,
    mount_partition,
    mount_share,
    mounted_locations,
    moved_path,
    unmount,
)

__all__ = [
    "Location",
    "Share",
    "format_drive",
    "mount_partition",
    "mount_share",
    "mounted_locations",
    "moved_path",
    "repositories_in",
    "unmount",
]
