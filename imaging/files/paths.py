"""Paths inside a mounted snapshot, walked without ever following a symlink.

A snapshot's filesystem is hostile input: a symlink ``etc -> /etc`` inside it must not lead
a listing or a restore to the host's files. Every path is split into names and walked one
directory file descriptor at a time with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import os

from imaging.errors import NotFound, UsageError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def split(path: str) -> list[str]:
    """``"/home/ann/x.txt"`` -> ``["home", "ann", "x.txt"]``; ``..`` is refused."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"{path!r}: paths inside a snapshot may not contain '..'.")
    if any("\0" in p for p in parts):
        raise UsageError(f"{path!r} contains a NUL character.")
    return parts


def display(parts: list[str]) -> str:
    return "/" + "/".join(parts)


def safe_name(name: str) -> bool:
    """A name that can be created in a directory without leaving it."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def open_dir(root: str | int, parts: list[str]) -> int:
    """A file descriptor of directory ``parts`` under ``root`` (a path or a directory file
    descriptor); symlinks are not followed."""
    fd = os.open(".", DIR_FLAGS, dir_fd=root) if isinstance(root, int) else os.open(root, DIR_FLAGS)
    try:
        for i, name in enumerate(parts):
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                raise NotFound(
                    f"{display(parts[: i + 1])} does not exist in the snapshot."
                ) from None
            except NotADirectoryError:
                raise UsageError(f"{display(parts[: i + 1])} is not a directory.") from None
            except OSError as e:
                if e.errno == 40:  # ELOOP: a symlink
                    raise UsageError(
                        f"{display(parts[: i + 1])} is a symbolic link; name its target instead."
                    ) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def lstat_in(root: str, parts: list[str]) -> os.stat_result | None:
    """``lstat`` of ``parts`` under ``root``, or None when it does not exist."""
    if not parts:
        return os.stat(root)
    try:
        fd = open_dir(root, parts[:-1])
    except NotFound:
        return None
    try:
        return os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    finally:
        os.close(fd)
