"""What a partition holds and how much of it is used, remembered until the partition changes.

Listing the disks asks blkid what each partition holds and, for FAT, exFAT and NTFS,
partclone how much of it is used (``--domain`` maps the whole bitmap). A hotplug event
anywhere (a loop device coming and going every second) must not run them again for
partitions that did not change, so the answers are kept under a key that changes whenever
the partition can have changed:

- the device node, the partition's start and size;
- the disk's ``diskseq`` (a new medium, a loop device attached again: Linux >= 5.15);
- the sectors written and discarded on the partition (on the whole disk when the partition
  has no node), from ``/sys/class/block/X/stat``: every write through the kernel moves them;
- for a loop device, its backing file (path and inode).

A write to a loop device's backing file behind the kernel's back (not through the loop
device) is not seen; its modification time is not part of the key because every write
through the loop device moves it, which would re-probe every partition of the disk.

The used size of a mounted filesystem comes from ``statvfs``, which is cheap and always
current: it is never kept.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from imaging.disks import sysfs

T = TypeVar("T")
log = logging.getLogger(__name__)

# /sys/class/block/X/stat fields (Documentation/block/stat.rst): sectors written, sectors
# discarded. Not the count of writes: an empty flush (mounting and unmounting read-only to
# look for a repository) counts as a write of no sectors.
_WRITE_FIELDS = (6, 13)
_LIMIT = 4096  # entries; a key that changed is never asked for again


def change_key(disk: str, node: str = "") -> tuple[object, ...]:
    """What changes whenever the content of ``node`` (a partition of ``disk``, or the disk
    itself when ``node`` is "") can have changed. Kernel names or /dev paths."""
    disk_name = os.path.basename(disk)
    node_name = os.path.basename(node) if node else disk_name
    fields = sysfs.attr(node_name, "stat").split()
    writes = tuple(fields[i] for i in _WRITE_FIELDS if i < len(fields))
    backing: tuple[object, ...] = ()
    if disk_name.startswith("loop"):
        path = sysfs.backing_file(disk_name)
        try:
            backing = (path, os.stat(path).st_ino)
        except OSError:
            backing = (path,)
    return (sysfs.attr(disk_name, "diskseq"), sysfs.size(disk_name), writes, backing)


class FactCache:
    """Answers about partitions, each computed once per change key (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._facts: dict[tuple[object, ...], object] = {}
        self.probes: Counter[tuple[str, str]] = Counter()
        """How often each (what, where) was really computed: ("blkid", "/dev/sdb1")."""

    def get(self, what: str, where: str, key: tuple[object, ...], compute: Callable[[], T]) -> T:
        """The cached answer to ``what`` about ``where`` under ``key``, or ``compute()``."""
        full = (what, where, *key)
        with self._lock:
            if full in self._facts:
                return self._facts[full]  # type: ignore[return-value]
        log.debug("%s of %s: not known under %s", what, where, key)
        value = compute()
        with self._lock:
            self.probes[(what, where)] += 1
            if len(self._facts) >= _LIMIT:
                self._facts.clear()
            self._facts[full] = value
        return value

    def clear(self) -> None:
        with self._lock:
            self._facts.clear()
            self.probes.clear()


CACHE = FactCache()
