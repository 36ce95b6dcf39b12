"""Block devices and image files as the engine sees them: their size and their kind."""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from imaging.errors import HourglassError
from imaging.process import run


def open_size(fd: int) -> int:
    """Size in bytes of the open file or block device ``fd`` (its end, where lseek finds it)."""
    return os.lseek(fd, 0, os.SEEK_END)


def device_size(path: str) -> int:
    """Size in bytes of a file or block device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return open_size(fd)
    finally:
        os.close(fd)


def is_block_device(path: str) -> bool:
    """True when ``path`` is (or links to) a block device; False for anything else or nothing."""
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


SETTLE_TIMEOUT = 10  # seconds udev may take to finish probing a disk just written


def settle_udev(timeout: int = SETTLE_TIMEOUT) -> None:
    """Wait (at most ``timeout`` s) until udev has handled the events queued so far: after a
    partition table or filesystem is written, udev's probes (blkid) hold the device open for
    a moment, and an exclusive open meanwhile fails with EBUSY. Without udev, no wait."""
    with contextlib.suppress(HourglassError, OSError):
        run(["udevadm", "settle", f"--timeout={timeout}"], check=False, timeout=timeout + 5)


def open_exclusive(path: str, flags: int) -> int:
    """``os.open(path, flags | O_EXCL)`` for a block device; on EBUSY, wait for udev to
    settle and try once more (a second restore to the same disk seconds after the first
    found it busy while udev probed it). A device still busy then raises the EBUSY."""
    try:
        return os.open(path, flags | os.O_EXCL)
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
    settle_udev()
    return os.open(path, flags | os.O_EXCL)
