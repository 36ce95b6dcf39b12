"""Turning what the person named on the command line into a backup plan.

- a whole disk (or a whole-disk image file with a partition table): kind ``disk``, with the
  head, the table and every partition;
- several partitions of one disk: kind ``disk`` with the head, the table and only those
  partitions (``disk.imaged`` lists them), so a restore can recreate the layout;
- one partition, or a device or image file holding a filesystem directly: kind ``partition``
  (``file`` for an image file), one ``data`` image with the filesystem's used-block map;
- anything else: every non-zero block, raw.
"""

from __future__ import annotations

import os
import stat

from imaging.disks import filesystems, sysfs
from imaging.disks.plan import plan_disk, plan_filesystem
from imaging.disks.table import read_table
from imaging.errors import SourceError, UsageError
from imaging.image.backup import BackupPlan, plan_file


def plan_for(sources: list[str], *, force: bool = False) -> BackupPlan:
    """A plan for SOURCE...; ``force`` images partitions even when mounted read-write."""
    if not sources:
        raise UsageError("Name what to back up: a disk, partitions of one disk, or a file.")
    for source in sources:
        if not os.path.exists(source):
            raise SourceError(f"The source {source} does not exist.")
    if len(sources) > 1:
        return _plan_partitions(sources, force)
    source = sources[0]
    real = os.path.realpath(source)
    mode = os.stat(real).st_mode
    if stat.S_ISBLK(mode):
        name = sysfs.name_of(real)
        if not sysfs.is_partition(name) and read_table(real) is not None:
            return plan_disk(source, force=force)
        return plan_filesystem(source, force=force)
    if stat.S_ISREG(mode):
        if filesystems.partition_table_type(real) and read_table(real) is not None:
            return plan_disk(source, force=force)
        if filesystems.probe(real).fstype in filesystems.PARTCLONE:
            return plan_filesystem(source, force=force)
    return plan_file(source)


def _plan_partitions(sources: list[str], force: bool) -> BackupPlan:
    disks: set[str] = set()
    numbers: set[int] = set()
    for source in sources:
        real = os.path.realpath(source)
        if not stat.S_ISBLK(os.stat(real).st_mode) or not sysfs.is_partition(
            name := sysfs.name_of(real)
        ):
            raise UsageError(
                f"{source} is not a partition.",
                "Several sources must be partitions of one disk; back up other things one "
                "at a time.",
            )
        disks.add(sysfs.parent_disk(name))
        numbers.add(sysfs.int_attr(name, "partition"))
    if len(disks) != 1:
        raise UsageError(
            "The partitions are on different disks: " + ", ".join(sorted(disks)) + ".",
            "A snapshot holds one source; back up each disk's partitions separately.",
        )
    return plan_disk(f"/dev/{disks.pop()}", only=numbers, force=force)
