"""A disk that reads slowly, for tests that must act while a backup is running.

``python -m tests.recovery_ui.slowdisk IMAGE MOUNTPOINT DELAY`` serves IMAGE read-only as
``MOUNTPOINT/disk.img`` over FUSE, sleeping DELAY seconds in every read; a loop device on
that file is a real block device that reads at a few tens of MB/s.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from typing import Any


def main() -> None:
    import mfusepy

    image, mountpoint, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    size = os.path.getsize(image)
    fd = os.open(image, os.O_RDONLY)

    class Slow(mfusepy.Operations):  # type: ignore[misc]
        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            if path == "/":
                return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2}
            if path != "/disk.img":
                raise mfusepy.FuseOSError(errno.ENOENT)
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": size}

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", "disk.img"]

        def read(self, path: str, length: int, offset: int, fh: int) -> bytes:
            time.sleep(delay)
            return os.pread(fd, length, offset)

    mfusepy.FUSE(Slow(), mountpoint, foreground=True, ro=True, direct_io=True)


if __name__ == "__main__":
    main()
