"""What is mounted, used as swap or held by another device, and which disks a path lives on."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from imaging.disks import sysfs
from imaging.mounts.mountinfo import Mount, mounts, unescape

SWAPS = Path("/proc/swaps")


def block_name(mount: Mount) -> str | None:
    """The kernel name of the block device mounted at ``mount`` (FUSE mounts such as
    ntfs-3g's have no device numbers of it, and name it as their source)."""
    name = sysfs.name_of_numbers(mount.major, mount.minor) if mount.major else None
    if name is not None:
        return name
    if mount.source.startswith("/dev/"):
        try:
            st = os.stat(mount.source)
        except OSError:
            return None
        if stat.S_ISBLK(st.st_mode):
            return sysfs.name_of_numbers(os.major(st.st_rdev), os.minor(st.st_rdev))
    return None


def swaps() -> list[str]:
    """Kernel names of block devices in use as swap."""
    names = []
    try:
        lines = SWAPS.read_text().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if fields and fields[0].startswith("/dev/"):
            try:
                names.append(sysfs.name_of(unescape(fields[0])))
            except Exception:  # noqa: S112 - a swap device that vanished is not in use
                continue
    return names


def mounts_of(name: str, all_mounts: list[Mount] | None = None) -> list[Mount]:
    """Mounts of the block device ``name`` itself."""
    return [
        m for m in (all_mounts if all_mounts is not None else mounts()) if block_name(m) == name
    ]


def mount_of_path(path: str, all_mounts: list[Mount] | None = None) -> Mount | None:
    """The mount that holds ``path`` (the longest mount point that is a prefix of it)."""
    real = os.path.realpath(path)
    best: Mount | None = None
    for m in all_mounts if all_mounts is not None else mounts():
        point = m.mountpoint.rstrip("/") or "/"
        if (real == point or real.startswith(point + "/") or point == "/") and (
            best is None or len(point) >= len(best.mountpoint.rstrip("/") or "/")
        ):
            best = m
    return best


def disks_below(name: str, *, follow_loops: bool = True, _seen: set[str] | None = None) -> set[str]:
    """The disks whose blocks ``name`` is made of: a partition's disk, a dm/md device's members,
    a loop device's backing file's disks (with ``follow_loops``), and the disk itself."""
    seen = _seen if _seen is not None else set()
    if name in seen:
        return set()
    seen.add(name)
    disk = sysfs.parent_disk(name)
    result = {disk}
    for member in sysfs.slaves(disk):
        result |= disks_below(member, follow_loops=follow_loops, _seen=seen)
    if follow_loops and disk.startswith("loop"):
        backing = sysfs.backing_file(disk)
        if backing:
            result |= disks_of_path(backing, _seen=seen)
    return result


def disks_of_path(path: str, *, _seen: set[str] | None = None) -> set[str]:
    """The disks that hold the file or directory ``path`` (through loops, dm and md)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return set()
    if stat.S_ISBLK(st.st_mode):
        name = sysfs.name_of_numbers(os.major(st.st_rdev), os.minor(st.st_rdev))
        return disks_below(name, _seen=_seen) if name else set()
    mount = mount_of_path(real)
    if mount is None:
        return set()
    name = block_name(mount)
    return disks_below(name, _seen=_seen) if name else set()


def in_use(name: str, all_mounts: list[Mount] | None = None) -> list[str]:
    """Why the block device ``name`` (and, for a disk, any of its partitions) is busy:
    mounted, active swap, or held by device-mapper/md. Empty when nothing uses it."""
    all_mounts = all_mounts if all_mounts is not None else mounts()
    names = [name] + (
        [p.name for p in sysfs.partitions(name)] if not sysfs.is_partition(name) else []
    )
    swapping = set(swaps())
    reasons = []
    for n in names:
        for m in mounts_of(n, all_mounts):
            mode = "read-only" if m.read_only else "read-write"
            reasons.append(f"/dev/{n} is mounted {mode} at {m.mountpoint}")
        if n in swapping:
            reasons.append(f"/dev/{n} is in use as swap")
        for holder in sysfs.holders(n):
            reasons.append(f"/dev/{n} is held by /dev/{holder}")
    return reasons
