"""A second opinion on partclone's used-block map, from the filesystem's own metadata.

partclone can call in-use blocks free, and a block called free is stored as UNUSED (zeros on
restore) while backup and restore both say "verified". Two cases found (issue 14):

- btrfs: partclone 0.3.23 maps each chunk at its first stripe's offset only. On a member of
  a multi-device filesystem that offset may belong to another device; on one device the
  second copy of DUP metadata is never mapped. The chunk tree and the device tree say where
  every chunk lives on which device.
- ext2/3/4: the bitmaps (and so partclone) call blocks free that files use when a group is
  wrongly flagged BLOCK_UNINIT, with descriptor counts that agree with the bitmap. Only the
  inodes tell: ``e2fsck -fn`` walks them and names the blocks in use that the bitmap calls
  free. The group metadata ``dumpe2fs`` lists (superblock copies, descriptors, reserved GDT,
  bitmaps, inode tables) and the resize inode's blocks are always kept too.

A check only ever adds to what is read; where it adds anything, the snapshot records a
warning. Where it cannot run, the caller images the filesystem raw.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType

from imaging.errors import ToolFailed
from imaging.image.usedmap import UsedMap, merge_ranges
from imaging.process import run
from imaging.units import human_size

C_LOCALE = {"LC_ALL": "C"}  # the tools' messages are parsed: never translated
EXT = ("ext2", "ext3", "ext4")

Ranges = list[tuple[int, int]]


def checked_map(device: str, fstype: str, used: UsedMap) -> tuple[UsedMap, list[str]]:
    """``used`` (partclone's map of ``device``) with whatever the filesystem's metadata says
    is in use added, and a warning for each disagreement. Raises ToolFailed (or ToolMissing)
    when the metadata cannot be read: then nothing vouches for the map."""
    with Opinion(device, fstype) as opinion:
        return opinion.checked(used)


class Opinion:
    """The filesystem's own metadata of ``device``, read while partclone maps it.

    For ext2/3/4 the three tools (dumpe2fs, then debugfs for the resize inode; e2fsck's inode
    walk) start at once, in the background: on a cold cache they take about as long as
    partclone's map, which no longer waits for them. Use as a context manager (it waits for
    the tools on the way out); :meth:`checked` raises what a tool raised.
    """

    def __init__(self, device: str, fstype: str) -> None:
        self.device, self.fstype = device, fstype
        self._pool: ThreadPoolExecutor | None = None
        if fstype in EXT:
            self._pool = ThreadPoolExecutor(2, thread_name_prefix="crosscheck")
            self._layout: Future[tuple[ExtLayout, list[int]]] = self._pool.submit(
                _ext_layout, device
            )
            self._fsck: Future[str] = self._pool.submit(_e2fsck_opinion, device)

    def __enter__(self) -> Opinion:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def checked(self, used: UsedMap) -> tuple[UsedMap, list[str]]:
        if self._pool is not None:
            layout, resize = self._layout.result()
            return _ext_checked(layout, resize, self._fsck.result(), used)
        if self.fstype == "btrfs":
            return _btrfs_checked(self.device, used)
        return used, []


def _added(before: UsedMap, after: UsedMap) -> int:
    return after.used_bytes - before.used_bytes


# --- ext2/3/4 -------------------------------------------------------------------------------


@dataclass
class ExtLayout:
    block_size: int = 0
    groups: dict[int, tuple[int, int]] = field(default_factory=dict)  # first, last block
    uninit: list[int] = field(default_factory=list)  # groups flagged BLOCK_UNINIT
    metadata: list[tuple[int, int]] = field(default_factory=list)  # first, last block
    resize_inode: bool = False


_GROUP = re.compile(r"^Group (\d+): \(Blocks (\d+)-(\d+)\)(.*)$")
_META = re.compile(
    r"(?:superblock at|Group descriptors at|Reserved GDT blocks at|bitmap at|Inode table at)"
    r" (\d+)(?:-(\d+))?"
)


def parse_dumpe2fs(text: str) -> ExtLayout:
    """Block size, groups, BLOCK_UNINIT flags and metadata blocks from ``dumpe2fs``."""
    layout = ExtLayout()
    for line in text.splitlines():
        if line.startswith("Block size:"):
            layout.block_size = int(line.split(":", 1)[1])
        elif line.startswith("Filesystem features:"):
            layout.resize_inode = "resize_inode" in line.split(":", 1)[1].split()
        elif m := _GROUP.match(line):
            number = int(m.group(1))
            layout.groups[number] = (int(m.group(2)), int(m.group(3)))
            if "BLOCK_UNINIT" in m.group(4):
                layout.uninit.append(number)
        elif line.startswith("  "):
            for m in _META.finditer(line):
                first = int(m.group(1))
                layout.metadata.append((first, int(m.group(2) or first)))
    if not layout.block_size or not layout.groups:
        raise ToolFailed("dumpe2fs printed no block size or block groups.")
    return layout


_DIFF_RANGE = re.compile(r"\+\((\d+)--(\d+)\)|\+(\d+)\b")
_UNINIT_IN_USE = re.compile(r"^Group (\d+) block\(s\) in use but group is marked BLOCK_UNINIT")


def parse_e2fsck(text: str) -> tuple[list[tuple[int, int]], set[int]]:
    """(first, last) block runs e2fsck finds in use though the bitmap calls them free, and
    the groups it finds in use though flagged BLOCK_UNINIT."""
    runs: list[tuple[int, int]] = []
    groups: set[int] = set()
    for line in text.splitlines():
        if m := _UNINIT_IN_USE.match(line):
            groups.add(int(m.group(1)))
        elif "Block bitmap differences:" in line:
            body = line.split("Block bitmap differences:", 1)[1]
            for m in _DIFF_RANGE.finditer(body):
                if m.group(3):
                    runs.append((int(m.group(3)), int(m.group(3))))
                else:
                    runs.append((int(m.group(1)), int(m.group(2))))
    return runs, groups


def _e2fsck_opinion(device: str) -> str:
    """``e2fsck -fn``'s report: it reads every inode and never writes."""
    result = run(["e2fsck", "-f", "-n", device], check=False, env=C_LOCALE)
    if result.returncode >= 8:  # 8 operational error, 16 usage, 32 cancelled, 128 library
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise ToolFailed(
            f"e2fsck could not check {device} (exit code {result.returncode})"
            + (f": {detail[-1]}" if detail else ".")
        )
    return result.stdout.decode(errors="replace")


def _resize_inode_blocks(device: str) -> list[int]:
    out = run(["debugfs", "-c", "-R", "blocks <7>", device], env=C_LOCALE).stdout
    return [int(word) for word in out.decode(errors="replace").split() if word.isdigit()]


def _blocks(runs: Iterable[tuple[int, int]], block_size: int) -> Iterator[tuple[int, int]]:
    for first, last in runs:
        yield first * block_size, (last - first + 1) * block_size


def _ext_layout(device: str) -> tuple[ExtLayout, list[int]]:
    """dumpe2fs's layout, and the resize inode's blocks if there is one."""
    dump = run(["dumpe2fs", device], env=C_LOCALE).stdout.decode(errors="replace")
    layout = parse_dumpe2fs(dump)
    return layout, _resize_inode_blocks(device) if layout.resize_inode else []


def _ext_checked(
    layout: ExtLayout, resize: list[int], fsck: str, used: UsedMap
) -> tuple[UsedMap, list[str]]:
    bs = layout.block_size
    warnings = []
    metadata = list(layout.metadata) + [(b, b) for b in resize]
    checked = used.union(_blocks(metadata, bs))
    if added := _added(used, checked):
        warnings.append(
            f"the ext4 bitmaps call {human_size(added)} of group metadata (superblock "
            "copies, descriptors, reserved GDT, bitmaps, inode tables, resize inode) free; "
            "stored it as it is"
        )
    runs, groups = parse_e2fsck(fsck)
    runs += [layout.groups[g] for g in sorted(groups) if g in layout.groups]
    before = checked
    checked = checked.union(_blocks(runs, bs))
    if added := _added(before, checked):
        named = f" (groups {', '.join(map(str, sorted(groups)))} flagged BLOCK_UNINIT)"
        warnings.append(
            f"e2fsck finds {human_size(added)} in use that the ext4 bitmaps call free"
            f"{named if groups else ''}; stored those blocks as they are (run e2fsck on "
            "the source to repair its bitmaps)"
        )
    return checked, warnings


# --- btrfs ----------------------------------------------------------------------------------

BTRFS_RESERVED = 1024 * 1024  # btrfs never allocates the first MiB of a device
SUPERBLOCK_MIRRORS = (64 * 1024, 64 * 1024 * 1024, 256 * 1024**3)
SUPERBLOCK_SIZE = 4096
MIRRORED = ("DUP", "RAID1", "RAID1C3", "RAID1C4")  # every stripe a whole copy


@dataclass
class Chunk:
    logical: int
    length: int
    profile: str  # DUP, RAID1, single, RAID0, ...
    stripes: list[tuple[int, int]] = field(default_factory=list)  # (devid, offset)


@dataclass
class BtrfsLayout:
    devid: int
    num_devices: int
    dev_extents: Ranges  # (offset, length) on this device
    chunks: list[Chunk]
    device_bytes: int  # the size btrfs uses of this device


def _super_fields(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            values[parts[0]] = parts[1]
    return values


_DEV_EXTENT_KEY = re.compile(r"key \((\d+) DEV_EXTENT (\d+)\)")
_DEV_EXTENT_LEN = re.compile(r"chunk_offset \d+ length (\d+)")
_CHUNK_KEY = re.compile(r"key \(FIRST_CHUNK_TREE CHUNK_ITEM (\d+)\)")
_CHUNK_LEN = re.compile(r"^\s*length (\d+) owner \d+ stripe_len \d+ type (\S+)")
_STRIPE = re.compile(r"^\s*stripe \d+ devid (\d+) offset (\d+)")


def parse_dev_extents(text: str, devid: int) -> Ranges:
    """(offset, length) of every device extent of ``devid`` in a device tree dump."""
    extents = []
    pending: int | None = None
    for line in text.splitlines():
        if m := _DEV_EXTENT_KEY.search(line):
            pending = int(m.group(2)) if int(m.group(1)) == devid else None
        elif pending is not None and (m := _DEV_EXTENT_LEN.search(line)):
            extents.append((pending, int(m.group(1))))
            pending = None
    return sorted(extents)


def parse_chunks(text: str) -> list[Chunk]:
    """The chunks of a chunk tree dump, with their profile and stripes."""
    chunks: list[Chunk] = []
    current: Chunk | None = None
    for line in text.splitlines():
        if m := _CHUNK_KEY.search(line):
            current = Chunk(int(m.group(1)), 0, "")
            chunks.append(current)
        elif current is not None and (m := _CHUNK_LEN.match(line)):
            current.length = int(m.group(1))
            current.profile = m.group(2).split("|")[-1]
        elif current is not None and (m := _STRIPE.match(line)):
            current.stripes.append((int(m.group(1)), int(m.group(2))))
    return chunks


def read_btrfs_layout(device: str) -> BtrfsLayout:
    """This device's id, the filesystem's device count, its device extents and chunks."""
    sb = run(["btrfs", "inspect-internal", "dump-super", device], env=C_LOCALE)
    fields = _super_fields(sb.stdout.decode(errors="replace"))
    try:
        devid, num_devices = int(fields["dev_item.devid"]), int(fields["num_devices"])
        device_bytes = int(fields["dev_item.total_bytes"])
    except (KeyError, ValueError) as e:
        raise ToolFailed(f"btrfs dump-super printed no device id for {device}.") from e
    dump = ["btrfs", "inspect-internal", "dump-tree"]
    dev = run([*dump, "-t", "dev", device], env=C_LOCALE).stdout.decode(errors="replace")
    chunk = run([*dump, "-t", "chunk", device], env=C_LOCALE).stdout.decode(errors="replace")
    layout = BtrfsLayout(
        devid, num_devices, parse_dev_extents(dev, devid), parse_chunks(chunk), device_bytes
    )
    if not layout.dev_extents or not layout.chunks:
        raise ToolFailed(f"btrfs printed no chunks or device extents for {device}.")
    return layout


def _btrfs_fixed(size: int, device_bytes: int) -> Ranges:
    """The first MiB (boot area, primary superblock), the superblock mirrors, and whatever
    follows the part of the device btrfs uses (kept whole, as for every filesystem)."""
    fixed = [(0, min(BTRFS_RESERVED, size))]
    fixed += [(at, SUPERBLOCK_SIZE) for at in SUPERBLOCK_MIRRORS if at + SUPERBLOCK_SIZE <= size]
    if device_bytes < size:
        fixed.append((device_bytes, size - device_bytes))
    return fixed


def _inside(ranges: Iterable[tuple[int, int]], start: int, end: int) -> Iterator[tuple[int, int]]:
    for s, length in ranges:
        lo, hi = max(s, start), min(s + length, end)
        if lo < hi:
            yield lo, hi - lo


def _mirror_copies(used: UsedMap, layout: BtrfsLayout) -> Ranges:
    """partclone's ranges inside each mirrored chunk's first stripe, repeated at its other
    stripes on this device (the DUP copy partclone leaves out)."""
    copies: Ranges = []
    ranges = list(merge_ranges(used.ranges()))
    for chunk in layout.chunks:
        if chunk.profile not in MIRRORED or len(chunk.stripes) < 2:
            continue
        first = chunk.stripes[0][1]
        inside = list(_inside(ranges, first, first + chunk.length))
        for devid, offset in chunk.stripes[1:]:
            if devid == layout.devid:
                copies += [(s - first + offset, length) for s, length in inside]
    return copies


def _btrfs_checked(device: str, used: UsedMap) -> tuple[UsedMap, list[str]]:
    layout = read_btrfs_layout(device)
    allocated = sorted(_btrfs_fixed(used.size, layout.device_bytes) + layout.dev_extents)
    everything = UsedMap.from_ranges(used.size, used.block_size, merge_ranges(allocated))
    if layout.num_devices > 1:
        # Which of partclone's ranges belong to this device cannot be told apart: keep every
        # block btrfs allocated here. A superset of what is in use; free space inside chunks
        # is stored as it is.
        return everything, [
            f"member (device id {layout.devid}) of a {layout.num_devices}-device btrfs: "
            "partclone maps each chunk at its first copy's offset, which may be on another "
            f"device; stored every block btrfs allocated on this device "
            f"({human_size(everything.used_bytes)}) as it is"
        ]
    outside = _added(everything, everything.union(used.ranges()))
    if outside:
        return everything, [
            f"partclone calls {human_size(outside)} in use where btrfs allocated nothing on "
            f"this device; stored every allocated block ({human_size(everything.used_bytes)})"
        ]
    # The DUP copies partclone leaves out are added without a warning: every single-device
    # btrfs has them, and where they go is certain.
    return used.union(_mirror_copies(used, layout)), []
