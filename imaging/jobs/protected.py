"""Disks an operation must never touch the wrong way.

- A backup never reads a disk that holds its own repository: the snapshot would contain the
  repository being written, and the backup would chase its own tail.
- A restore never writes the boot medium, the repository's disk (or a file inside the
  repository by any path), or a disk that is mounted or held: those rules live with the
  restore engine (:func:`imaging.image.restore.refuse_repository_target`,
  :func:`imaging.disks.restore.check_disk_target`), which every restore goes through.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from imaging.disks import mounts, sysfs
from imaging.errors import RepositoryOnSource
from imaging.image.backup import BackupPlan
from imaging.repository.store import Repository


def refuse_repository_on_source(repo: Repository, plan: BackupPlan) -> None:
    """:class:`RepositoryOnSource` when a block device the plan reads holds the repository."""

    # An object store is on no disk of this machine; a set has a directory per local member.
    for root in repo.store.local_paths:
        _refuse_source(root, plan)


def _refuse_source(root: Path, plan: BackupPlan) -> None:
    holding = mounts.disks_of_path(str(root))
    mount = mounts.mount_of_path(os.path.realpath(root))
    partition = mounts.block_name(mount) if mount is not None else None
    if partition:
        holding.add(partition)  # the partition, beside its disk
    if not holding:
        return
    for path in dict.fromkeys(image.path for image in plan.images):
        real = os.path.realpath(path)
        try:
            if not stat.S_ISBLK(os.stat(real).st_mode):
                continue
        except OSError:
            continue
        name = sysfs.name_of(real)
        # A partition is read alone; a disk with every partition on it. Not through loop
        # devices' backing files: the loop device of an image file on the repository's
        # drive reads the image, not the repository.
        read = {name} if sysfs.is_partition(name) else mounts.disks_below(name, follow_loops=False)
        mine = read & holding
        if mine:
            raise RepositoryOnSource(
                f"The repository {root} is on /dev/{sorted(mine)[0]}, which the backup would read.",
                "Choose a repository on another drive.",
            )
