"""Which disks a front end shows, the repositories on them, and hotplug.

On the appliance every disk is shown. ``HOURGLASS_DISKS`` limits a front end to some disks
(the tests, a lab, a developer's machine with disks that are none of Hourglass's business):
a comma-separated list of devices (``/dev/sdb``) and folders (a loop device whose backing
file is under the folder is shown).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from imaging.disks import discover, sysfs
from imaging.disks.model import Disk, Partition
from imaging.disks.repos import FoundRepository
from imaging.disks.repos import find_repositories as _find_repositories
from imaging.disks.watch import DiskWatcher
from imaging.errors import HourglassError
from imaging.mounts.drivers import REPOSITORY_FILESYSTEMS

__all__ = [
    "Disk",
    "DiskWatcher",
    "FoundRepository",
    "Partition",
    "Scope",
    "blank_disks",
    "find_repositories",
    "list_disks",
    "repository_partitions",
]

ENV = "HOURGLASS_DISKS"


@dataclass(frozen=True)
class Scope:
    """The disks a front end may look at: every disk, or only these devices and folders."""

    devices: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()

    @property
    def everything(self) -> bool:
        return not self.devices and not self.folders

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Scope:
        env = os.environ if environ is None else environ
        devices, folders = [], []
        for raw in env.get(ENV, "").split(","):
            word = raw.strip()
            if word.startswith("/dev/"):
                devices.append(word)
            elif word:
                folders.append(os.path.realpath(word))
        return cls(tuple(devices), tuple(folders))

    def allows(self, device: str, backing_file: str) -> bool:
        if self.everything:
            return True
        if os.path.realpath(device) in {os.path.realpath(d) for d in self.devices}:
            return True
        return any(
            backing_file == folder or backing_file.startswith(folder.rstrip("/") + "/")
            for folder in self.folders
        )


def list_disks(scope: Scope | None = None) -> list[Disk]:
    """The disks in ``scope`` (all of them by default), with their partitions."""
    if scope is None or scope.everything:
        return discover.list_disks()
    disks = []
    for name in sysfs.disk_names():
        device = f"/dev/{name}"
        if sysfs.size(name) == 0 or not scope.allows(device, sysfs.backing_file(name)):
            continue
        try:
            disks.append(discover.get_disk(device))
        except HourglassError:
            continue  # gone while we looked
    return disks


def find_repositories(
    disks: list[Disk], *, probe_disks: list[Disk] | None = None
) -> list[FoundRepository]:
    """Repositories on mounted filesystems of ``disks``, and on the unmounted partitions of
    ``probe_disks`` (mounted read-only to look), one entry per repository."""
    found = _find_repositories(disks, probe=False)
    if probe_disks:
        found += _find_repositories(probe_disks, probe=True)
    unique: dict[str, FoundRepository] = {}
    for repository in found:
        unique.setdefault(os.path.realpath(repository.path), repository)
    return sorted(unique.values(), key=lambda r: (r.disk, r.partition or 0, r.path))


def repository_partitions(disks: list[Disk], *, source: str = "") -> list[tuple[Disk, Partition]]:
    """Partitions a repository can live on: a filesystem Hourglass mounts read-write, not on
    the disk the system started from, nor on ``source``, the disk about to be backed up (a
    repository there would read itself, and its partition would stay mounted read-write)."""
    return [
        (disk, p)
        for disk in disks
        if not disk.is_boot_disk and disk.device != source
        for p in disk.partitions
        if p.device and p.fstype in REPOSITORY_FILESYSTEMS
    ]


def backup_sources(disks: list[Disk], *, repository_disk: str = "") -> list[Disk]:
    """The disks a front end offers to back up, the one to preselect first: never the disk
    the system started from, nor ``repository_disk`` (the open repository's); a disk that
    holds a repository comes after every disk that holds none."""
    offered = [
        d for d in disks if not d.is_boot_disk and d.partitions and d.device != repository_disk
    ]
    return sorted(offered, key=lambda d: d.holds_repository)  # stable: discovery's order


def blank_disks(disks: list[Disk], *, source: str = "") -> list[Disk]:
    """Disks that can become a backup drive: nothing on them that a filesystem holds (and
    not ``source``, the disk about to be backed up)."""
    return [
        d
        for d in disks
        if not d.is_boot_disk
        and d.device != source
        and not d.holds_repository
        and not d.mounted
        and not any(p.fstype for p in d.partitions)
    ]
