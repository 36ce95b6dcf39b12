"""Durable file writes: temporary file, fsync, rename, directory fsync."""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from imaging.errors import NoSpace
from imaging.mounts.mountinfo import filesystem_of


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until every byte is written (it may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_atomic(
    path: Path,
    *parts: bytes | bytearray,
    mode: int = 0o644,
    tmp_dir: Path | None = None,
    rename: Callable[[Path, Path], bool] | None = None,
) -> bool:
    """Write ``parts``, one after the other, to ``path`` so that a crash leaves either the old
    file or the new one. ``rename`` may refuse to replace ``path`` (returns False): then the
    file is left as it was and so does this."""
    tmp = (tmp_dir or path.parent) / f".tmp-{secrets.token_hex(8)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            for part in parts:
                write_all(fd, part)
            os.fsync(fd)
        finally:
            os.close(fd)
        chmod_if_supported(tmp, mode)
        if rename is None:
            os.rename(tmp, path)
        elif not rename(tmp, path):
            tmp.unlink()
            return False
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise_no_space(e, path)
        raise
    fsync_dir(path.parent)
    return True


# chmod on a filesystem without Unix permissions: fusefat has no chmod at all (ENOSYS), the
# kernel's vfat refuses modes it cannot store (EPERM), others say ENOTSUP.
NO_PERMISSIONS = (errno.ENOSYS, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP)


def chmod_if_supported(path: Path, mode: int) -> None:
    """``chmod`` that is a no-op where the filesystem keeps no permissions (FAT): the mode
    only undoes the umask, and such a filesystem gives every file the mount's mode anyway."""
    try:
        os.chmod(path, mode)
    except OSError as e:
        if e.errno not in NO_PERMISSIONS:
            raise


def raise_no_space(error: OSError, path: Path) -> None:
    """Turn ENOSPC/EDQUOT into :class:`NoSpace` naming the drive."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            st = os.statvfs(path.parent if not path.is_dir() else path)
            free = st.f_bavail * st.f_frsize
            detail = f" ({free} bytes free)"
        except OSError:
            detail = ""
        raise NoSpace(
            f"The backup drive is full{detail} while writing {path}.",
            "Free space: `hourglass gc` frees what failed backups left, `hourglass forget` "
            "then `hourglass gc` frees old snapshots (in the app: Repository, Free space or "
            "Forget old). Or use a larger drive.",
        ) from error


# Filesystems on a local block device whose syncfs(2) makes every file written before it
# durable with one journal commit. Network and FUSE filesystems are not trusted to flush to
# the server on syncfs: their chunks are made durable one fdatasync each.
SYNCFS_FILESYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "vfat", "exfat", "ntfs3", "tmpfs"}
)


def filesystem_type(path: Path) -> str:
    """The type of the filesystem ``path`` lives on, from /proc/self/mountinfo ("" unknown)."""
    mount = filesystem_of(path)
    return mount.fstype if mount is not None else ""


def syncfs(fd: int) -> None:
    """syncfs(2): write back and commit everything on the filesystem of ``fd``."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
