"""fanotify with file-handle events, through ctypes (docs/DEPENDENCIES.md says why).

One :class:`FilesystemWatch` per protected filesystem: a fanotify group that reports the
directory's file handle and the entry's name (``FAN_REPORT_DFID_NAME``), marked on the whole
filesystem (``FAN_MARK_FILESYSTEM``). Handles are turned into paths with
``open_by_handle_at`` against a descriptor on that filesystem, while the directory exists.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from imaging.errors import HourglassError
from imaging.libc import libc

FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_REPORT_DIR_FID = 0x400
FAN_REPORT_NAME = 0x800
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME

FAN_MARK_ADD = 0x1
FAN_MARK_FILESYSTEM = 0x100

FAN_CLOSE_WRITE = 0x8
FAN_MOVED_FROM = 0x40
FAN_MOVED_TO = 0x80
FAN_CREATE = 0x100
FAN_DELETE = 0x200
FAN_Q_OVERFLOW = 0x4000
FAN_ONDIR = 0x40000000

WATCHED = FAN_CLOSE_WRITE | FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_ONDIR

FAN_EVENT_INFO_TYPE_DFID_NAME = 2
_METADATA = struct.Struct("<IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_INFO = struct.Struct("<BBH")  # info_type, pad, len
_HANDLE = struct.Struct("<Ii")  # handle_bytes, handle_type
_FSID = 8
FANOTIFY_METADATA_VERSION = 3
O_PATH = 0o10000000

_libc = libc()
_libc.fanotify_init.argtypes = (ctypes.c_uint, ctypes.c_uint)
_libc.fanotify_init.restype = ctypes.c_int
_libc.fanotify_mark.argtypes = (
    ctypes.c_int,
    ctypes.c_uint,
    ctypes.c_uint64,
    ctypes.c_int,
    ctypes.c_char_p,
)
_libc.fanotify_mark.restype = ctypes.c_int
_libc.open_by_handle_at.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
_libc.open_by_handle_at.restype = ctypes.c_int


@dataclass(frozen=True)
class Event:
    """One event: what happened (the fanotify mask) to ``path`` (None: not resolvable)."""

    mask: int
    path: str | None

    @property
    def overflow(self) -> bool:
        return bool(self.mask & FAN_Q_OVERFLOW)


class FilesystemWatch:
    """A fanotify group marked on the filesystem that holds ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        fd = _libc.fanotify_init(
            FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME,
            os.O_RDONLY | os.O_CLOEXEC,
        )
        if fd < 0:
            err = ctypes.get_errno()
            hint = "The agent needs root (CAP_SYS_ADMIN) and Linux 5.9 or later."
            raise HourglassError(f"fanotify_init failed: {os.strerror(err)}.", hint)
        self.fd = fd
        self._mount_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if _libc.fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, WATCHED, -1, path.encode()):
            err = ctypes.get_errno()
            self.close()
            raise HourglassError(
                f"Cannot watch the filesystem of {path}: fanotify_mark failed "
                f"({os.strerror(err)}).",
                "A btrfs subvolume other than the filesystem's top is refused by some kernels "
                "(EXDEV): protect the filesystem's mount point."
                if err == errno.EXDEV
                else None,
            )
        self._dirs: dict[bytes, str] = {}
        """The last path each directory handle resolved to: the children of a directory that
        is gone by the time its events are read are named by it."""
        self.unresolved = 0

    def fileno(self) -> int:
        return int(self.fd)

    def read(self) -> Iterator[Event]:
        """The events queued now (none when the queue is empty)."""
        try:
            buf = os.read(self.fd, 1 << 18)
        except BlockingIOError:
            return
        offset = 0
        while offset + _METADATA.size <= len(buf):
            length, version, _, meta_len, mask, fd, _ = _METADATA.unpack_from(buf, offset)
            if version != FANOTIFY_METADATA_VERSION or length < _METADATA.size:
                raise HourglassError(f"fanotify metadata version {version} is not known.")
            if fd >= 0:
                os.close(fd)
            path = None
            if not mask & FAN_Q_OVERFLOW:
                path = self._path(buf, offset + meta_len, offset + length)
                if path is None:
                    self.unresolved += 1
            yield Event(mask, path)
            offset += length

    def _path(self, buf: bytes, start: int, end: int) -> str | None:
        while start + _INFO.size <= end:
            info_type, _, info_len = _INFO.unpack_from(buf, start)
            if info_len == 0:
                break
            if info_type == FAN_EVENT_INFO_TYPE_DFID_NAME:
                handle_at = start + _INFO.size + _FSID
                size, _ = _HANDLE.unpack_from(buf, handle_at)
                handle = bytes(buf[handle_at : handle_at + _HANDLE.size + size])
                name_at = handle_at + _HANDLE.size + size
                raw = bytes(buf[name_at : start + info_len]).split(b"\0", 1)[0]
                directory = self._directory(handle)
                if directory is None:
                    return None
                name = os.fsdecode(raw)
                return directory if name in ("", ".") else os.path.join(directory, name)
            start += info_len
        return None

    def _directory(self, handle: bytes) -> str | None:
        fd = _libc.open_by_handle_at(self._mount_fd, handle, O_PATH | os.O_CLOEXEC)
        if fd < 0:
            return self._dirs.get(handle)
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        if path.endswith(" (deleted)"):
            return self._dirs.get(handle, path.removesuffix(" (deleted)"))
        self._dirs[handle] = path
        if len(self._dirs) > 100_000:
            self._dirs.clear()
        return path

    def close(self) -> None:
        for fd in (self.fd, self._mount_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
