"""Whole-system recovery points while the host runs: whether it has a consistent view of its
system to image from (an LVM logical volume, which can be snapshotted; btrfs, whose
subvolumes have read-only snapshots), or none (a plain filesystem on a partition).

The agent does not take such images yet (``[images] schedule`` is kept, not acted on): it
says which case the host is in, so that ``agent status`` tells a person where whole-system
images come from: the appliance (booting the Hourglass stick), with the file journal for
everything after the newest one (``restore --at``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from imaging.mounts.mountinfo import Mount, filesystem_of, mounts

SYS_BLOCK = Path("/sys/dev/block")


@dataclass(frozen=True)
class SystemView:
    kind: str
    """``lvm``, ``btrfs`` or ``none``."""
    path: str
    fstype: str
    source: str

    def describe(self) -> str:
        where = f"{self.path} is {self.fstype or 'unknown'} on {self.source or 'unknown'}"
        if self.kind == "none":
            return (
                f"none taken on this host: {where}, with no LVM or btrfs snapshot to image "
                "it from while it runs. Whole-system images come from the appliance (boot "
                "the Hourglass stick); the journal covers what changed after the newest "
                'one (`hourglass restore --at "TIME"`).'
            )
        how = "an LVM snapshot" if self.kind == "lvm" else "read-only btrfs snapshots"
        return (
            f"not taken by the agent yet: {where}, which {how} could image consistently. "
            "Until then whole-system images come from the appliance; the journal covers "
            "what changed after the newest one."
        )

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "path": self.path, "fstype": self.fstype, "source": self.source}


def system_view(path: str = "/") -> SystemView:
    """How the filesystem holding ``path`` could be imaged while it is in use."""
    mount = filesystem_of(path) or _mount_above(path)
    if mount is None:
        return SystemView("none", path, "", "")
    if mount.fstype == "btrfs":
        return SystemView("btrfs", path, mount.fstype, mount.source)
    if _is_lvm(mount.major, mount.minor):
        return SystemView("lvm", path, mount.fstype, mount.source)
    return SystemView("none", path, mount.fstype, mount.source)


def _mount_above(path: str) -> Mount | None:
    """The mount whose mount point holds ``path`` (btrfs gives each subvolume a device number
    of its own, which mountinfo does not show)."""
    real = os.path.realpath(path)
    best = None
    for m in mounts():
        inside = m.mountpoint in ("/", real) or real.startswith(m.mountpoint + "/")
        if inside and (best is None or len(m.mountpoint) >= len(best.mountpoint)):
            best = m
    return best


def _is_lvm(major: int, minor: int) -> bool:
    """A device-mapper device that LVM made (its dm uuid starts with ``LVM-``)."""
    try:
        uuid = (SYS_BLOCK / f"{major}:{minor}" / "dm" / "uuid").read_text()
    except OSError:
        return False
    return uuid.startswith("LVM-") and os.path.exists(SYS_BLOCK / f"{major}:{minor}")
