"""Block devices and image files as the engine sees them: their size and their kind."""

from __future__ import annotations

import os
import stat


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
