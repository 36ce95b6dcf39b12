"""Finding Hourglass repositories on the disks: on mounted filesystems, and on request on
unmounted partitions, which are mounted read-only under /run/hourglass/probe to look.

A repository is a directory with a repository ``config``; it is looked for at the top of a
filesystem and one level down (``/backups`` on a USB disk, say).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from imaging.disks import mounts, sysfs
from imaging.disks.model import Disk
from imaging.errors import HourglassError
from imaging.mounts import mountinfo
from imaging.mounts.drivers import REPOSITORY_FILESYSTEMS, Mode
from imaging.mounts.mount import mount, unmount
from imaging.repository.store import is_repository

PROBE_ROOT = Path("/run/hourglass/probe")


@dataclass(frozen=True)
class FoundRepository:
    path: str  # the repository directory
    disk: str  # device path of the disk that holds it (/dev/sdb, /dev/loop3)
    partition: int | None  # partition number on that disk; None for a filesystem on the disk
    mounted_by_us: bool = False  # True when a probe mounted it (read-only) to look

    @property
    def folder(self) -> str:
        """The repository's folder as a person knows it: from the drive's root where a probe
        mounted it (``/hourglass-backups``, not the probe's mount point), else its path."""
        if not self.mounted_by_us:
            return self.path
        return "/" + os.path.relpath(self.path, _mount_root(self.path)).removeprefix(".")

    def release(self) -> None:
        """Unmount a filesystem a probe mounted (nothing for one that was mounted already)."""
        if self.mounted_by_us:
            unmount(_mount_root(self.path), remove=True)


def _mount_root(path: str) -> str:
    p = Path(path)
    while p.parent not in (PROBE_ROOT, p):
        p = p.parent
    return str(p)


def repositories_in(directory: str) -> list[str]:
    """Repositories at ``directory`` and one level below it (where people put them)."""
    candidates = [directory]
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                    candidates.append(entry.path)
    return [path for path in sorted(candidates) if _is_repository(path)]


def _is_repository(path: str) -> bool:
    try:
        return (Path(path) / "config").is_file() and is_repository(Path(path))
    except OSError:
        return False


def _owner(name: str) -> tuple[str, int | None]:
    """(disk kernel name, partition number) a block device's filesystem lives on; device
    mapper and md devices are followed to their first member (LUKS on a partition, say)."""
    seen = set()
    while not sysfs.is_partition(name) and sysfs.slaves(name) and name not in seen:
        seen.add(name)
        name = sysfs.slaves(name)[0]
    if sysfs.is_partition(name):
        return sysfs.parent_disk(name), sysfs.int_attr(name, "partition")
    return name, None


def mounted_repositories(
    disks: list[Disk], all_mounts: list[mountinfo.Mount] | None = None
) -> list[FoundRepository]:
    """Repositories on filesystems that are mounted now, on ``disks``."""
    wanted = {d.device for d in disks}
    result: list[FoundRepository] = []
    seen: set[str] = set()
    for m in all_mounts if all_mounts is not None else mountinfo.mounts():
        name = mounts.block_name(m)
        if name is None:
            continue
        disk, number = _owner(name)
        device = f"/dev/{disk}"
        if device not in wanted:
            continue
        for path in repositories_in(m.mountpoint):
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            result.append(FoundRepository(path, device, number))
    return result


def find_repositories(disks: list[Disk], *, probe: bool = False) -> list[FoundRepository]:
    """Repositories on ``disks``. With ``probe``, unmounted partitions whose filesystem
    Hourglass can mount are mounted read-only under /run/hourglass/probe and looked at;
    those holding a repository stay mounted (``mounted_by_us``), the others are unmounted
    again. Call :meth:`FoundRepository.release` when done with one."""
    all_mounts = mountinfo.mounts()
    result = mounted_repositories(disks, all_mounts)
    if not probe:
        return result
    for disk in disks:
        for part in disk.partitions:
            if part.mountpoint or not part.device or part.fstype not in REPOSITORY_FILESYSTEMS:
                continue
            if mounts.mounts_of(sysfs.name_of(part.device), all_mounts):
                continue
            where = PROBE_ROOT / os.path.basename(part.device)
            try:
                mount(part.device, part.fstype, str(where), Mode.READ_ONLY)
            except HourglassError:
                continue
            found = repositories_in(str(where))
            if not found:
                unmount(str(where), remove=True)
                continue
            result.extend(FoundRepository(path, disk.device, part.number, True) for path in found)
    return result
