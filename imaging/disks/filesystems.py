"""What a partition holds (blkid), how much of it is used, and which blocks (partclone).

partclone knows the allocation bitmaps of ext2/3/4, xfs, btrfs, FAT, exFAT, NTFS, HFS+ and
more; ``partclone.<fs> --domain`` writes the used byte ranges as a ddrescue domain log without
copying any data, which is what a backup needs to read only the used blocks.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from imaging.errors import HourglassError, ToolFailed
from imaging.image.devices import device_size
from imaging.image.usedmap import UsedMap
from imaging.process import run

# blkid's TYPE -> the partclone program that reads its bitmap.
PARTCLONE = {
    "ext2": "partclone.extfs",
    "ext3": "partclone.extfs",
    "ext4": "partclone.extfs",
    "xfs": "partclone.xfs",
    "btrfs": "partclone.btrfs",
    "vfat": "partclone.fat",
    "exfat": "partclone.exfat",
    "ntfs": "partclone.ntfs",
    "hfsplus": "partclone.hfsplus",
    "f2fs": "partclone.f2fs",
    "minix": "partclone.minix",
}


@dataclass(frozen=True)
class FsInfo:
    fstype: str = ""  # blkid TYPE: ext4, xfs, btrfs, vfat, exfat, ntfs, crypto_LUKS, swap, ...
    label: str = ""
    uuid: str = ""

    @property
    def partclone(self) -> str | None:
        return PARTCLONE.get(self.fstype)


def probe(path: str, offset: int = 0, size: int | None = None) -> FsInfo:
    """What blkid finds at ``offset`` of ``path`` (a low-level probe: no cache, no udev)."""
    argv = ["blkid", "-p", "-o", "export"]
    if offset or size is not None:
        argv += ["-O", str(offset)]
        if size is not None:
            argv += ["-S", str(size)]
    result = run([*argv, path], check=False)
    if result.returncode not in (0, 2):  # 2: nothing recognised
        return FsInfo()
    values = {}
    for line in result.stdout.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    if values.get("USAGE") not in ("filesystem", "crypto", "raid", "other", None):
        return FsInfo()
    return FsInfo(values.get("TYPE", ""), values.get("LABEL", ""), values.get("UUID", ""))


def partition_table_type(path: str) -> str:
    """``gpt``, ``dos`` or "" as blkid sees ``path`` (a filesystem wins over a table)."""
    result = run(["blkid", "-p", "-o", "export", path], check=False)
    values = dict(
        line.partition("=")[::2] for line in result.stdout.decode(errors="replace").splitlines()
    )
    if values.get("TYPE"):
        return ""
    return values.get("PTTYPE", "")


# --- used bytes, for discovery --------------------------------------------------------------


def used_bytes(device: str, fstype: str, mountpoint: str = "") -> int | None:
    """Bytes in use as the filesystem tells it; None when it cannot tell cheaply."""
    if mountpoint:
        with contextlib.suppress(OSError):
            st = os.statvfs(mountpoint)
            return (st.f_blocks - st.f_bfree) * st.f_frsize
    try:
        if fstype in ("ext2", "ext3", "ext4"):
            return _ext_used(device)
        if fstype == "xfs":
            return _xfs_used(device)
        if fstype == "btrfs":
            return _btrfs_used(device)
        if fstype in ("vfat", "exfat", "ntfs"):
            return used_map(device, fstype, device_size(device), 4 * 1024 * 1024).used_bytes
    except (HourglassError, OSError, ValueError):
        return None
    return None


def _fields(text: str, sep: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        if found:
            values[key.strip()] = value.strip()
    return values


def _ext_used(device: str) -> int:
    out = run(["dumpe2fs", "-h", device]).stdout.decode(errors="replace")
    v = _fields(out, ":")
    return (int(v["Block count"]) - int(v["Free blocks"])) * int(v["Block size"])


def _xfs_used(device: str) -> int:
    out = run(
        ["xfs_db", "-r", "-c", "sb 0", "-c", "print dblocks fdblocks blocksize", device]
    ).stdout.decode(errors="replace")
    v = _fields(out, "=")
    return (int(v["dblocks"]) - int(v["fdblocks"])) * int(v["blocksize"])


def _btrfs_used(device: str) -> int:
    out = run(["btrfs", "inspect-internal", "dump-super", device]).stdout.decode(errors="replace")
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "bytes_used":
            return int(fields[1])
    raise ValueError("no bytes_used")


# --- used blocks, for backup ----------------------------------------------------------------

_DOMAIN_LINE = re.compile(r"^\s*(0x[0-9A-Fa-f]+)\s+(0x[0-9A-Fa-f]+)\s+([?*/\-+])\s*$")


def parse_domain(lines: Iterable[str]) -> Iterator[tuple[int, int, str]]:
    """(start, length, status) of each block of a ddrescue domain log; ``+`` means used."""
    for line in lines:
        m = _DOMAIN_LINE.match(line)
        if m:
            yield int(m.group(1), 16), int(m.group(2), 16), m.group(3)


def used_ranges(lines: Iterable[str], size: int) -> Iterator[tuple[int, int]]:
    """The used ranges of a domain log, and everything after the range it covers: partclone
    maps whole filesystem blocks, so sectors past the last one (NTFS keeps its backup boot
    sector in the partition's last sector) are not in its log but must be kept."""
    covered = 0
    for start, length, status in parse_domain(lines):
        covered = max(covered, start + length)
        if status == "+":
            yield start, length
    if covered < size:
        yield covered, size - covered


def used_map(
    device: str,
    fstype: str,
    size: int,
    block_size: int,
    *,
    mounted: bool = False,
    checked: bool = False,
) -> UsedMap:
    """The used blocks of the filesystem on ``device`` (``size`` bytes), from partclone.
    ``checked``: the filesystem was just checked (resized) by its own tool, so partclone's
    refusal of a volume marked for a check (ntfsresize marks it for chkdsk) is skipped."""
    tool = PARTCLONE[fstype]
    with tempfile.TemporaryDirectory(prefix="hourglass-partclone-") as tmp:
        domain = os.path.join(tmp, "domain.log")
        log = os.path.join(tmp, "partclone.log")
        # partclone 0.3.23 joins its progress thread at the end, and that thread sleeps its
        # refresh interval (2 s by default, 3 s with --quiet) whole: far longer than mapping
        # takes. "--UI-fresh 0" wakes it at once; the domain log is the same, and the
        # progress output is captured anyway.
        argv = [tool, "--domain", "--UI-fresh", "0", "--source", device, "--output", domain]
        argv += ["--logfile", log]
        if mounted:
            argv.append("--force")  # partclone refuses a mounted source even read-only
        if checked:
            argv.append("--ignore_fschk")
        result = run(argv, check=False)
        if result.returncode != 0 or not os.path.exists(domain):
            detail = _last_lines(log) or result.stderr.decode(errors="replace").strip()
            raise ToolFailed(
                f"{tool} could not map the used blocks of {device} (exit code "
                f"{result.returncode}): {detail}"
            )
        with open(domain, encoding="ascii", errors="replace") as f:
            return UsedMap.from_ranges(size, block_size, used_ranges(f, size))


def _last_lines(path: str, count: int = 2) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return " / ".join(lines[-count:])
