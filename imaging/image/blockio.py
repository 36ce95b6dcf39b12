"""Reading sources and writing targets (files or block devices) fast, past the page cache.

I/O that is 4 KiB aligned goes through O_DIRECT with page-aligned buffers: it reads and
writes several times faster than through the page cache (bench/README.md), a backup or
restore does not evict everything else from memory, and a read-back after a restore really
reads the disk. Unaligned pieces (an image's tail) and
filesystems that refuse O_DIRECT fall back to ordinary I/O.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import threading

ALIGN = 4096


def aligned_buffer(size: int) -> mmap.mmap:
    """A page-aligned, zero-filled buffer (anonymous memory), as O_DIRECT needs."""
    return mmap.mmap(-1, size)


def data_extents(path: str) -> list[tuple[int, int]] | None:
    """The ``(start, length)`` ranges of a regular file that hold data (SEEK_DATA/SEEK_HOLE);
    None when the file is not sparse-aware (a block device, or a filesystem without it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        extents: list[tuple[int, int]] = []
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break  # only a hole remains
                return None
            end = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, end - start))
            pos = end
        return extents
    finally:
        os.close(fd)


def read_exact(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` from ``offset``; a short read is an EIO (the source ended early)."""
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            raise OSError(errno.EIO, "unexpected end of source")
        done += n


class SourceFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        self.direct_fd: int | None = None
        with contextlib.suppress(OSError, AttributeError):
            self.direct_fd = os.open(path, os.O_RDONLY | os.O_DIRECT)

    def read_into(self, view: memoryview, offset: int) -> None:
        """Read ``len(view)`` bytes at ``offset``; ``view`` must lie in an aligned buffer
        for the direct path to be used."""
        if self.direct_fd is not None and offset % ALIGN == 0 and len(view) % ALIGN == 0:
            try:
                read_exact(self.direct_fd, view, offset)
                return
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                os.close(self.direct_fd)
                self.direct_fd = None
        read_exact(self.fd, view, offset)

    def close(self) -> None:
        os.close(self.fd)
        if self.direct_fd is not None:
            os.close(self.direct_fd)
            self.direct_fd = None

    def __enter__(self) -> SourceFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def write_exact(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class TargetFile:
    """Writes to an opened target; ``fd`` was opened by the caller (exclusively, for a disk)."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.direct_fd: int | None = None
        self._local = threading.local()
        with contextlib.suppress(OSError, AttributeError):
            self.direct_fd = os.open(path, os.O_WRONLY | os.O_DIRECT)

    def write_at(self, data: bytes | memoryview, offset: int) -> None:
        direct = self.direct_fd
        if direct is not None and offset % ALIGN == 0 and len(data) % ALIGN == 0:
            buf: mmap.mmap | None = getattr(self._local, "buf", None)
            if buf is None or len(buf) < len(data):
                buf = self._local.buf = aligned_buffer(max(len(data), 4 << 20))
            with memoryview(buf)[: len(data)] as view:
                view[:] = data
                try:
                    write_exact(direct, view, offset)
                    return
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    self.direct_fd = None
        write_exact(self.fd, data, offset)

    def sync(self) -> None:
        os.fsync(self.fd)
        if self.direct_fd is not None:
            os.fsync(self.direct_fd)

    def close(self) -> None:
        if self.direct_fd is not None:
            os.close(self.direct_fd)
            self.direct_fd = None
        os.close(self.fd)
