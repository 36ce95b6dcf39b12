"""A disk that fails on purpose, for fault tests: a FUSE file over an image, put on a loop
device so the engine sees a real block device (this kernel has no device-mapper).

``python -m tests.faultydisk IMAGE MOUNTPOINT [--bad START:LEN]... [--fail-writes-after N]
[--delay SECONDS]`` serves IMAGE as ``MOUNTPOINT/disk.img``: reads that touch a bad range
fail with EIO, writes fail with EIO once N bytes were written (a target that dies mid-way),
every read sleeps DELAY seconds (a slow disk). :func:`faulty_disk` runs it for a test.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def serve() -> None:
    import mfusepy

    parser = argparse.ArgumentParser()
    parser.add_argument("image")
    parser.add_argument("mountpoint")
    parser.add_argument("--bad", action="append", default=[])
    parser.add_argument("--fail-writes-after", type=int, default=-1)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    bad = [tuple(int(x) for x in spec.split(":")) for spec in args.bad]
    size = os.path.getsize(args.image)
    fd = os.open(args.image, os.O_RDWR)
    written = [0]
    lock = threading.Lock()

    class Faulty(mfusepy.Operations):  # type: ignore[misc]
        use_ns = True

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            if path == "/":
                return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
            if path != "/disk.img":
                raise mfusepy.FuseOSError(errno.ENOENT)
            return {"st_mode": stat.S_IFREG | 0o644, "st_nlink": 1, "st_size": size}

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", "disk.img"]

        def open(self, path: str, flags: int) -> int:
            return 0

        def read(self, path: str, length: int, offset: int, fh: int) -> bytes:
            if args.delay:
                time.sleep(args.delay)
            for start, count in bad:
                if offset < start + count and start < offset + length:
                    raise mfusepy.FuseOSError(errno.EIO)
            return os.pread(fd, length, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            with lock:
                if 0 <= args.fail_writes_after <= written[0]:
                    raise mfusepy.FuseOSError(errno.EIO)
                written[0] += len(data)
            return os.pwrite(fd, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> None:
            return None

        def fsync(self, path: str, datasync: int, fh: int) -> None:
            os.fsync(fd)

    mfusepy.FUSE(Faulty(), args.mountpoint, foreground=True, direct_io=True, allow_other=True)


@contextlib.contextmanager
def faulty_disk(
    image: Path,
    workdir: Path,
    *,
    bad: list[tuple[int, int]] = (),  # type: ignore[assignment]
    fail_writes_after: int = -1,
    delay: float = 0.0,
) -> Iterator[str]:
    """A loop device over IMAGE that fails as asked; torn down afterwards."""
    mountpoint = workdir / "faulty"
    mountpoint.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "tests.faultydisk", str(image), str(mountpoint)]
    argv += [f"--bad={start}:{count}" for start, count in bad]
    argv += [f"--fail-writes-after={fail_writes_after}", f"--delay={delay}"]
    server = subprocess.Popen(argv, cwd=Path(__file__).resolve().parent.parent)
    try:
        deadline = time.monotonic() + 20
        while not (mountpoint / "disk.img").exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the faulty disk did not come up")
            time.sleep(0.05)
        device = subprocess.run(
            ["losetup", "--show", "--find", "--direct-io=off", str(mountpoint / "disk.img")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        try:
            yield device
        finally:
            subprocess.run(["losetup", "-d", device], check=False)
    finally:
        subprocess.run(["fusermount", "-u", str(mountpoint)], check=False, capture_output=True)
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    serve()
