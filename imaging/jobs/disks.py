"""Which disks a front end shows, the repositories on them, and hotplug.

On the appliance every disk is shown. ``HOURGLASS_DISKS`` limits a front end to some disks
(the tests, a lab, a developer's machine with disks that are none of Hourglass's business):
a comma-separated list of devices (``/dev/sdb``) and folders (a loop device whose backing
file is under the folder is shown).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
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
    "disk_of_event",
    "find_repositories",
    "in_scope",
    "iter_disks",
    "list_disks",
    "read_disk",
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
    return list(iter_disks(scope))


def iter_disks(scope: Scope | None = None) -> Iterator[Disk]:
    """The disks of :func:`list_disks`, each as soon as it has been read (a front end shows
    them as they come: a slow disk does not hold back the others)."""
    if scope is None or scope.everything:
        yield from discover.iter_disks()
        return
    for name in sysfs.disk_names():
        device = f"/dev/{name}"
        if sysfs.size(name) == 0 or not scope.allows(device, sysfs.backing_file(name)):
            continue
        try:
            yield discover.get_disk(device)
        except HourglassError:
            continue  # gone while we looked


def in_scope(name: str, scope: Scope | None = None) -> bool:
    """True when the whole disk ``name`` (kernel name) is one a front end shows."""
    if not discover.is_listed(name):
        return False
    return scope is None or scope.allows(f"/dev/{name}", sysfs.backing_file(name))


def disk_of_event(device: str, shown: list[Disk], scope: Scope | None = None) -> str | None:
    """The disk (``/dev/sdb``) that a hotplug event about ``device`` (a disk or one of its
    partitions) changes in the list ``shown``, or None when the event is none of the
    front end's business (a disk out of scope, one that came and went unseen)."""
    for disk in shown:
        if device == disk.device or any(device == p.device for p in disk.partitions):
            return disk.device
    name = os.path.basename(device)
    if not sysfs.exists(name):
        # A partition of a shown disk that went: /dev/loop3p2 of /dev/loop3.
        for disk in shown:
            rest = device.removeprefix(disk.device)
            if rest != device and rest.lstrip("p").isdigit():
                return disk.device
        return None
    if sysfs.is_partition(name):
        name = sysfs.parent_disk(name)
    return f"/dev/{name}" if in_scope(name, scope) else None


def read_disk(device: str, scope: Scope | None = None) -> Disk | None:
    """The disk ``device`` as it is now, or None when it is gone or out of ``scope``."""
    name = os.path.basename(device)
    if not sysfs.exists(name) or not in_scope(name, scope):
        return None
    try:
        return discover.get_disk(device)
    except HourglassError:
        return None  # gone while we looked


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
