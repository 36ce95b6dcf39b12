"""Which partition grows when a disk snapshot is restored to a larger disk, and where the
partitions after it go.

The plan (``--grow``): grow the partition that holds the largest data filesystem (Windows'
C:, a Linux root or /home), or the one ``--grow-partition N`` names, by all the room the
larger disk adds; every partition after it moves to the end of the new disk unchanged, in
the same order with the same gaps between them (a Windows Recovery partition, a trailing
swap, an ESP placed last, another data partition). A restore writes each partition's image
where the new table puts it, so moving costs nothing.

What never moves: a BIOS boot partition. GRUB's boot code in the MBR holds the sector of the
``core.img`` written there, so a partition that lies after one is never grown; the plan
then grows the last partition, as Hourglass always did, and says why. An MBR extended
container grows along when the partition grown is one of its logical partitions, and moves
whole (with its logical partitions and their EBRs, which libparted rewrites) when it lies
after the one grown.

A smaller disk (:func:`plan_shrink`, no flag needed): the same partition, chosen the same
way among the filesystems Hourglass can shrink, gives up the room the disk lacks, and the
partitions after it move back by as much, unchanged. It must still hold its data: the
image's used bytes (partclone's map, recorded at backup) plus a margin for the metadata a
smaller filesystem still needs; when it cannot, the next largest that can is chosen, and
when none can, the plan is refused naming the disk size the data needs. docs/DISKS.md,
"Restoring to a smaller disk", says how each filesystem shrinks.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field, replace

from imaging.disks.table import MBR_MAX_SECTORS, MIB, PartitionTable, TablePartition
from imaging.errors import TargetTooSmall, UsageError
from imaging.units import decimal_size

BIOS_BOOT = "21686148-6449-6e6f-744e-656564454649"
# Partitions of one fixed purpose: never the one grown by default, whatever they hold.
FIXED_PURPOSE = {
    BIOS_BOOT,
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",  # EFI System
    "e3c9e316-0b5c-4db8-817d-f92df00215ae",  # Microsoft reserved
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac",  # Windows recovery
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f",  # Linux swap
    "bc13c2ff-59e6-4262-a352-b275fd6f7172",  # Linux extended boot
    "0xef",  # EFI System
    "0x27",  # Windows recovery
    "0x82",  # Linux swap
    "0x12",  # vendor diagnostics / recovery
    "0x84",  # hibernation
}
# Filesystems a person keeps data in, and that Hourglass can grow (imaging.disks.grow).
DATA_FILESYSTEMS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "ntfs", "vfat", "exfat"}
# Filesystems Hourglass can shrink, and how (imaging.disks.shrink). xfs cannot shrink: it is
# made anew at the smaller size, with the same UUID and label, and its files are copied.
SHRINK_HOW = {
    "ext2": "shrunk with resize2fs",
    "ext3": "shrunk with resize2fs",
    "ext4": "shrunk with resize2fs",
    "ntfs": "shrunk with ntfsresize",
    "btrfs": "shrunk with btrfs filesystem resize",
    "xfs": "made anew at that size (same UUID and label) and its files copied from the snapshot",
    # imaging.disks.lvmshrink
    "LVM2_member": "made smaller: its logical volumes packed at its start, the largest shrunk "
    "as far as the room demands",
}
LVM_PV = "LVM2_member"
# What a shrunk filesystem needs beyond the bytes its data uses: metadata that grows with
# the data (ext4 inode tables of the groups kept, an NTFS MFT zone, a new xfs log).
SHRINK_MARGIN = 32 * MIB
# The smallest a filesystem can be made: xfsprogs 5.19 and later refuse an xfs under 300 MiB;
# the kernel refuses to resize a btrfs under 256 MiB (EINVAL).
SMALLEST = {"xfs": 300 * MIB, "btrfs": 256 * MIB}


@dataclass(frozen=True)
class GrowPlan:
    """The table to write on the larger (or smaller) disk and what changed against the
    snapshot's."""

    before: PartitionTable
    after: PartitionTable
    grown: TablePartition | None  # the partition resized (grown, or shrunk), as in ``after``
    moved: tuple[TablePartition, ...] = ()  # as they are in ``after``
    notes: tuple[str, ...] = field(default_factory=tuple)
    fstype: str = ""  # the filesystem of the partition resized
    needed: int = 0  # bytes the partition shrunk must hold at least (its data and margin)

    @property
    def shrinks(self) -> bool:
        """True for a plan that shrinks a partition (the disk is smaller)."""
        if self.grown is None:
            return False
        return self.grown.sectors < self.before.partition(self.grown.number).sectors

    def lines(self) -> list[str]:
        """What the plan changes, in words, for the confirmation and the result (its notes
        say what it could not do)."""
        if self.grown is None:
            return []
        ss = self.after.sector_size
        old = self.before.partition(self.grown.number)
        if self.shrinks:
            what = "LVM physical volume" if self.fstype == LVM_PV else f"{self.fstype} filesystem"
            lines = [
                f"Partition {self.grown.number} shrinks from {decimal_size(old.sectors * ss)} "
                f"to {decimal_size(self.grown.sectors * ss)}: its {what} is "
                f"{SHRINK_HOW.get(self.fstype, 'shrunk')}."
            ]
        else:
            lines = [
                f"Partition {self.grown.number} grows from {decimal_size(old.sectors * ss)} to "
                f"{decimal_size(self.grown.sectors * ss)}, and its filesystem with it."
            ]
        for p in self.moved:
            if p.is_container:
                continue
            lines.append(
                f"Partition {p.number} ({p.type_name}, {decimal_size(p.sectors * ss)}) moves "
                "to the end of the disk, unchanged."
            )
        return lines


def default_partition(
    table: PartitionTable, fstypes: Mapping[int, str], kinds: Set[str] = DATA_FILESYSTEMS
) -> int | None:
    """The partition the plan grows: the largest data filesystem (of ``kinds``) with no BIOS
    boot partition after it; None when there is none (the caller grows the last
    partition)."""
    bios_boot_starts = [p.start for p in table.partitions if p.type == BIOS_BOOT]
    candidates = [
        p
        for p in table.data_partitions
        if p.type not in FIXED_PURPOSE
        and fstypes.get(p.number, "") in kinds
        and not any(start > p.start for start in bios_boot_starts)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.sectors, p.start)).number


def _limit(table: PartitionTable, device_size: int) -> int:
    """The last sector a partition may use on a disk of ``device_size`` bytes, so that the
    end stays aligned to 1 MiB."""
    ss = table.sector_size
    limit = device_size // ss - 1
    if table.kind == "gpt":
        limit -= table.backup_area() // ss
    else:
        limit = min(limit, MBR_MAX_SECTORS - 1)
    align = max(1, MIB // ss)
    return ((limit + 1) // align) * align - 1


def plan_grow(
    table: PartitionTable,
    fstypes: Mapping[int, str],
    device_size: int,
    number: int | None = None,
) -> GrowPlan:
    """The plan for a disk of ``device_size`` bytes; ``number`` (``--grow-partition``) picks
    the partition to grow instead of :func:`default_partition`. A plan that grows nothing
    (the disk is no larger) says so in its notes."""
    notes: list[str] = []
    if number is not None:
        chosen = _chosen(table, number, "grow", "Grow the last partition (--grow) instead.")
    else:
        found = default_partition(table, fstypes)
        if found is None:
            last = table.last_partition()
            if last is None:
                return GrowPlan(table, table, None, notes=("The disk has no partitions.",))
            found = last.number
            if any(p.type == BIOS_BOOT for p in table.partitions):
                notes.append(
                    "No data filesystem could grow without moving the BIOS boot partition: "
                    f"the last partition ({found}) grows instead."
                )
        chosen = table.partition(found)
    last_end = max(p.end for p in table.partitions)
    align = max(1, MIB // table.sector_size)
    delta = ((_limit(table, device_size) - last_end) // align) * align
    if delta <= 0:
        notes.append("The target is no larger than the original: nothing to grow.")
        return GrowPlan(table, table, None, notes=tuple(notes))
    after, grown, moved = _move(table, chosen, delta)
    return GrowPlan(table, after, grown, moved, tuple(notes), fstypes.get(chosen.number, ""))


def _move(
    table: PartitionTable, chosen: TablePartition, delta: int
) -> tuple[PartitionTable, TablePartition, tuple[TablePartition, ...]]:
    """``chosen`` ends ``delta`` sectors later (earlier when negative), the partitions after
    it move by as much, its container (an MBR extended partition) ends with it."""
    grown = replace(chosen, end=chosen.end + delta)
    parts: list[TablePartition] = []
    moved: list[TablePartition] = []
    for p in table.partitions:
        if p.number == chosen.number:
            parts.append(grown)
        elif p.start > chosen.start:
            shifted = replace(p, start=p.start + delta, end=p.end + delta)
            parts.append(shifted)
            moved.append(shifted)
        elif p.is_container and p.start < chosen.start <= p.end:
            parts.append(replace(p, end=p.end + delta))  # the container of the one resized
        else:
            parts.append(p)
    return replace(table, partitions=tuple(parts)), grown, tuple(moved)


def shrink_needs(fstype: str, used: int) -> int:
    """The bytes a shrunk partition must hold for a ``fstype`` filesystem whose data uses
    ``used`` bytes: that, a tenth more and :data:`SHRINK_MARGIN`, in whole MiB, and never
    less than the smallest such filesystem mkfs makes."""
    needed = max(used + used // 10 + SHRINK_MARGIN, SMALLEST.get(fstype, 0))
    return -(-needed // MIB) * MIB


def _shrinkable(fstypes: Mapping[int, str], used: Mapping[int, int]) -> dict[int, str]:
    return {n: fs for n, fs in fstypes.items() if fs in SHRINK_HOW and n in used}


def shrink_partition(
    table: PartitionTable, fstypes: Mapping[int, str], used: Mapping[int, int]
) -> int | None:
    """The partition the shrink plan shrinks: the largest that holds a filesystem Hourglass
    can shrink, imaged by used blocks (``used`` names it), as :func:`default_partition`
    chooses; None when there is none."""
    return default_partition(table, _shrinkable(fstypes, used), SHRINK_HOW.keys())


def plan_shrink(
    table: PartitionTable,
    fstypes: Mapping[int, str],
    used: Mapping[int, int],
    device_size: int,
    number: int | None = None,
    *,
    target: str = "The target",
) -> GrowPlan:
    """The plan for a disk of ``device_size`` bytes smaller than the snapshot's layout:
    partition ``number`` (else the largest filesystem Hourglass can shrink, as
    :func:`default_partition` chooses) gives up the room the disk lacks. ``used`` holds the
    bytes each partition's data uses. :class:`TargetTooSmall`, naming the size the data
    needs, when it cannot hold its data then. Where the largest cannot give up enough
    (btrfs has a floor of its own), the next largest that can is chosen."""
    shrinkable = _shrinkable(fstypes, used)
    if number is not None:
        chosen = _chosen(table, number, "shrink", "Let the plan choose the partition to shrink.")
        if shrinkable.get(number) is None:
            what = fstypes.get(number) or "no filesystem Hourglass knows"
            raise _too_small(
                target,
                device_size,
                table.required_size(),
                f"Partition {number} holds {what}, which Hourglass cannot shrink. Choose a "
                "larger disk, or another partition to shrink (--resize-partition N).",
            )
        return _shrink_one(table, chosen, fstypes, used, device_size, target)
    # The largest first; where its data leaves it too little room, the next largest.
    candidates = dict(shrinkable)
    first_refusal: TargetTooSmall | None = None
    while (found := default_partition(table, candidates, SHRINK_HOW.keys())) is not None:
        try:
            return _shrink_one(table, table.partition(found), fstypes, used, device_size, target)
        except TargetTooSmall as e:
            first_refusal = first_refusal or e
            del candidates[found]
    if first_refusal is not None:
        raise first_refusal
    raise _too_small(
        target,
        device_size,
        table.required_size(),
        "No partition holds a filesystem Hourglass can shrink (ext2/3/4, NTFS, btrfs, "
        "xfs, an LVM physical volume) without moving a BIOS boot partition. Choose a "
        "larger disk or restore single partitions.",
    )


def _shrink_one(
    table: PartitionTable,
    chosen: TablePartition,
    fstypes: Mapping[int, str],
    used: Mapping[int, int],
    device_size: int,
    target: str,
) -> GrowPlan:
    """The plan where ``chosen`` gives up all the room the disk lacks."""
    ss = table.sector_size
    align = max(1, MIB // ss)
    last_end = max(p.end for p in table.partitions)
    delta = -(-(last_end - _limit(table, device_size)) // align) * align  # sectors to give up
    needed = min(shrink_needs(fstypes[chosen.number], used[chosen.number]), chosen.sectors * ss)
    room = (chosen.sectors - delta) * ss
    if room < needed:
        # no more than the whole layout, which fits without shrinking anything
        need_disk = min(-(-(device_size + needed - room) // MIB) * MIB, table.required_size())
        raise _too_small(
            target,
            device_size,
            need_disk,
            f"Partition {chosen.number} ({fstypes.get(chosen.number)}) holds "
            f"{decimal_size(used[chosen.number])} of data and needs at least "
            f"{decimal_size(needed)}; on this disk it would have {decimal_size(max(room, 0))}. "
            "Choose a larger disk.",
        )
    after, shrunk, moved = _move(table, chosen, -delta)
    return GrowPlan(table, after, shrunk, moved, (), fstypes[chosen.number], needed)


def _chosen(table: PartitionTable, number: int, verb: str, hint: str) -> TablePartition:
    """Partition ``number``, which the person named to ``verb``; UsageError when it is
    not there, is an extended container, or lies before a BIOS boot partition."""
    try:
        chosen = table.partition(number)
    except KeyError:
        raise UsageError(f"The snapshot's disk has no partition {number} to {verb}.") from None
    if chosen.is_container:
        raise UsageError(
            f"Partition {number} is an extended container: name one of its logical "
            f"partitions to {verb}."
        )
    if any(p.type == BIOS_BOOT and p.start > chosen.start for p in table.partitions):
        raise UsageError(
            f"Partition {number} cannot {verb}: a BIOS boot partition after it would have to "
            "move, and GRUB finds its core.img there by sector.",
            hint,
        )
    return chosen


def _too_small(target: str, size: int, needed: int, hint: str) -> TargetTooSmall:
    return TargetTooSmall(
        f"{target} ({decimal_size(size)}, {size} bytes) is smaller than the snapshot's data "
        f"needs ({decimal_size(needed)}, {needed} bytes).",
        hint,
    )
