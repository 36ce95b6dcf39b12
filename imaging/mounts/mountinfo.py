"""What is mounted in this mount namespace, read from ``/proc/self/mountinfo``.

Each line is ``ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE
SUPER_OPTIONS`` (proc(5)); the kernel writes space, tab, newline and backslash in paths as
octal escapes (``\\040``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str  # the directory of the filesystem mounted here ("/" unless a bind mount)
    mountpoint: str
    options: tuple[str, ...]  # per mount: ro, nosuid, relatime...
    fstype: str  # ext4, vfat, fuseblk, fuse.sshfs...
    source: str  # /dev/sdb1, //server/share, or what a FUSE program names
    super_options: tuple[str, ...]  # per filesystem

    @property
    def read_only(self) -> bool:
        return "ro" in self.options or "ro" in self.super_options

    @property
    def device_numbers(self) -> str:
        """``MAJOR:MINOR`` of the filesystem, as ``os.stat`` reports its ``st_dev``."""
        return f"{self.major}:{self.minor}"


def unescape(text: str) -> str:
    """A mountinfo field as the path it is (``\\040`` is a space)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def parse_line(line: str) -> Mount | None:
    """One mountinfo line, or None for a line that is not one."""
    left, sep, right = line.partition(" - ")
    fields, tail = left.split(), right.split()
    if not sep or len(fields) < 6 or not tail:
        return None
    major, _, minor = fields[2].partition(":")
    try:
        return Mount(
            mount_id=int(fields[0]),
            parent_id=int(fields[1]),
            major=int(major),
            minor=int(minor),
            root=unescape(fields[3]),
            mountpoint=unescape(fields[4]),
            options=tuple(fields[5].split(",")),
            fstype=tail[0],
            source=unescape(tail[1]) if len(tail) > 1 else "",
            super_options=tuple(tail[2].split(",")) if len(tail) > 2 else (),
        )
    except ValueError:
        return None


def mounts() -> list[Mount]:
    """Every mount this process can see, in mount order (empty when /proc is not there)."""
    try:
        lines = MOUNTINFO.read_text().splitlines()
    except OSError:
        return []
    return [m for m in map(parse_line, lines) if m is not None]


def mount_points() -> set[str]:
    """Every mount point of this mount namespace."""
    return {m.mountpoint for m in mounts()}


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """Is something mounted at ``path`` itself (not: is ``path`` on a mounted filesystem)?"""
    return os.fspath(path) in mount_points()


def mounts_of_source(source: str) -> list[str]:
    """Mount points whose source is ``source`` (found even where the directory was renamed)."""
    return [m.mountpoint for m in mounts() if m.source == source]


def filesystem_of(path: str | os.PathLike[str]) -> Mount | None:
    """The mount of the filesystem ``path`` lives on (the last one mounted, where there are
    several mounts of it), by its device numbers; None when it is unknown."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return None
    found = None
    for m in mounts():
        if (m.major, m.minor) == (os.major(dev), os.minor(dev)):
            found = m
    return found
