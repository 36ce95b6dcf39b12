"""Which files unreadable ranges hit, where the filesystem can tell (ext2/3/4, via debugfs).

A rescue backup stores zeros where the source could not be read; the person needs to know
which of their files are damaged, not byte offsets. e2fsprogs' debugfs maps blocks to inodes
(``icheck``) and inodes to paths (``ncheck``) on the unmounted filesystem, read-only.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from imaging.errors import HourglassError
from imaging.process import run

EXT = ("ext2", "ext3", "ext4")
MAX_BLOCKS = 20000  # beyond this, naming files would take longer than it helps


@contextlib.contextmanager
def _filesystem_device(path: str, offset: int, size: int) -> Iterator[str]:
    """A device holding just the filesystem: ``path`` itself, or a read-only loop device."""
    if offset == 0:
        yield path
        return
    device = (
        run(
            [
                "losetup",
                "--read-only",
                "--find",
                "--show",
                f"--offset={offset}",
                f"--sizelimit={size}",
                path,
            ]
        )
        .stdout.decode()
        .strip()
    )
    try:
        yield device
    finally:
        run(["losetup", "--detach", device], check=False)


def files_hit(path: str, offset: int, size: int, fstype: str, ranges: list[list[int]]) -> list[str]:
    """Paths of the files (or ``<inode N>``/metadata notes) that ``ranges`` (byte offsets in
    the filesystem) fall into; [] when the filesystem cannot tell."""
    if fstype not in EXT or not ranges:
        return []
    try:
        with _filesystem_device(path, offset, size) as device:
            header = run(["dumpe2fs", "-h", device]).stdout.decode(errors="replace")
            m = re.search(r"^Block size:\s+(\d+)", header, re.MULTILINE)
            if not m:
                return []
            block_size = int(m.group(1))
            blocks: list[int] = []
            for start, length in ranges:
                blocks.extend(range(start // block_size, (start + length - 1) // block_size + 1))
            blocks = sorted(set(blocks))[:MAX_BLOCKS]
            icheck = _debugfs(device, "icheck " + " ".join(map(str, blocks)))
            inodes = sorted(
                {
                    int(parts[1])
                    for parts in (line.split() for line in icheck)
                    if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit()
                }
            )
            if not inodes:
                return ["(free space or filesystem metadata only)"]
            ncheck = _debugfs(device, "ncheck " + " ".join(map(str, inodes)))
            named: dict[int, str] = {}
            for line in ncheck:
                parts = line.split("\t", 1)
                if len(parts) == 2 and parts[0].strip().isdigit():
                    named.setdefault(int(parts[0]), "/" + parts[1].strip().lstrip("/"))
            return [named.get(inode, f"<inode {inode}, no name>") for inode in inodes]
    except HourglassError:
        return []


def _debugfs(device: str, request: str) -> list[str]:
    result = run(["debugfs", "-R", request, device], check=False)
    return result.stdout.decode(errors="replace").splitlines()[1:]  # skip the header line
