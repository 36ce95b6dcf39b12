"""Restore a disk snapshot to a disk (or an image file), or one of its partitions alone.

A whole-disk restore, in order:

1. check the target: not part of the repository nor its disk, not the boot disk, nothing on
   it mounted or held, large enough for every partition where it was (the size needed is
   named otherwise), same logical sector size;
2. recreate the partition table with the snapshot's GUIDs and signature (on an image file,
   fresh ones with ``new_ids``), the GPT backup header at the end of the target; with
   ``grow``, the plan of
   imaging.disks.resize: the largest data partition (or ``grow_partition``) takes the room
   a larger disk adds and the partitions after it move to the end;
3. write the boot code and the gap before the first partition from the ``head`` image, but
   not the table sectors just written;
4. write every partition image at its offset (the engine's parallel, aligned writer);
5. read back and compare: every partition block against its chunk id, the boot code and gap
   against the head image, the table against the snapshot's (``verify``, the default);
6. make the kernel re-read the table and drop stale partition caches;
7. with ``grow``, grow that partition's filesystem with its own tool;
8. with ``new_ids``, on a disk: new disk, partition, filesystem (where safe), PV and VG ids
   and the references to them inside the restored system (imaging.disks.identity).

A disk smaller than the snapshot's layout gets the shrink plan of imaging.disks.resize
without asking (the largest filesystem Hourglass can shrink, or ``grow_partition``, gives up
the room the disk lacks; the partitions after it move back). The plan is checked against the
data before step 2, and the shrunk filesystem is made in a scratch file before step 2 too
(imaging.disks.shrink), so a plan that does not fit leaves the target as it was; xfs is
re-created after step 6 and its files copied from the snapshot.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from imaging.disks import mounts, sysfs
from imaging.disks.discover import boot_disk_names, get_disk, read_image_file
from imaging.disks.grow import can_grow, grow_filesystem
from imaging.disks.identity import give_new_ids
from imaging.disks.lvmshrink import ShrunkPv, finish_pv, shrink_pv_in_scratch, write_pv
from imaging.disks.resize import LVM_PV, GrowPlan, plan_grow, plan_shrink, shrink_partition
from imaging.disks.shrink import (
    Scratch,
    Shrunk,
    check_scratch,
    check_shrunk,
    in_scratch,
    recreate_xfs,
    scratch_needs,
    shrink_in_scratch,
    write_shrunk,
)
from imaging.disks.table import (
    PartitionTable,
    TablePartition,
    flush_partition_caches,
    read_table,
    reread_partitions,
    table_area,
    write_table,
)
from imaging.errors import (
    HourglassError,
    IntegrityError,
    SnapshotNotFound,
    TargetTooSmall,
    TargetUnsuitable,
    UsageError,
)
from imaging.image.devices import open_exclusive
from imaging.image.restore import (
    ImageTarget,
    RestoreOptions,
    RestoreResult,
    refuse_repository_target,
    restore_images,
    verify_written,
)
from imaging.progress import ProgressCallback, no_progress
from imaging.repository import codec
from imaging.repository.records import ImageRecord
from imaging.repository.store import Repository, Snapshot
from imaging.units import decimal_size


@dataclass
class DiskRestoreResult(RestoreResult):
    """A :class:`RestoreResult` that also says what happened to the table and filesystems."""

    table: str = ""  # "gpt" or "msdos" when a table was written
    kernel: str = ""  # how the kernel was made to re-read the table
    grown: str = ""  # "p7: ext4 grown to 2.1 GB with resize2fs"
    shrunk: str = ""  # "partition 3: ntfs shrunk from 168 MB to 84 MB with ntfsresize"
    plan: list[str] = field(default_factory=list)  # what the grow plan did, in words
    notes: list[str] = field(default_factory=list)
    replayed: str = ""  # what the file journal's replay did, in words (restore --at)
    new_ids: list[str] = field(default_factory=list)  # "partition 2: vfat UUID A -> B (...)"
    kept_ids: list[str] = field(default_factory=list)  # an id kept with --new-ids, and why
    references: list[str] = field(default_factory=list)  # "partition 8: /etc/fstab (3)"


@dataclass(frozen=True)
class _Target:
    path: str
    kind: str  # "disk", "partition" or "file"
    size: int  # bytes; 0 for a file that does not exist yet
    name: str = ""  # kernel name of a block device

    @property
    def disk_name(self) -> str:
        return sysfs.parent_disk(self.name) if self.name else ""


# --- what the snapshot holds ----------------------------------------------------------------


def snapshot_table(snapshot: Snapshot) -> PartitionTable:
    disk = snapshot.record.disk
    if snapshot.kind != "disk" or disk is None or disk.table is None:
        raise UsageError(f"Snapshot {snapshot.id[:12]} is not a whole-disk snapshot.")
    return PartitionTable.from_dict(dict(disk.table))


def _partition_image(snapshot: Snapshot, table: PartitionTable, number: int) -> ImageRecord:
    try:
        entry = table.partition(number)
    except KeyError:
        numbers = ", ".join(str(p.number) for p in table.data_partitions)
        raise SnapshotNotFound(
            f"Snapshot {snapshot.id[:12]} has no partition {number}.",
            f"Its partitions are: {numbers}.",
        ) from None
    if entry.is_container:
        raise UsageError(f"Partition {number} is an extended partition: it holds no data.")
    try:
        return snapshot.image(f"p{number}")
    except SnapshotNotFound:
        raise SnapshotNotFound(
            f"Partition {number} was not imaged in snapshot {snapshot.id[:12]} "
            "(only some partitions were backed up)."
        ) from None


# --- the target -----------------------------------------------------------------------------


def _target(path: str) -> _Target:
    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        if os.path.isdir(os.path.dirname(real) or "."):
            return _Target(real, "file", 0)
        raise TargetUnsuitable(f"{path} does not exist, and neither does its directory.") from None
    if stat.S_ISREG(mode):
        return _Target(real, "file", os.path.getsize(real))
    if not stat.S_ISBLK(mode):
        raise TargetUnsuitable(f"{path} is neither a disk, a partition nor a file.")
    name = sysfs.name_of(real)
    kind = "partition" if sysfs.is_partition(name) else "disk"
    return _Target(real, kind, sysfs.size(name), name)


def _refuse_protected(repo: Repository, target: _Target) -> None:
    """The boot disk, the repository's disk (:func:`refuse_repository_target`) and a disk in
    use are never written."""
    disk = target.disk_name
    device = f"/dev/{disk}"
    if disk in boot_disk_names():
        raise TargetUnsuitable(
            f"{device} is the disk this system was started from: Hourglass never writes to it.",
            "Choose another disk.",
        )
    refuse_repository_target(repo, target.path)
    busy = mounts.in_use(disk)
    if busy:
        raise TargetUnsuitable(
            f"{device} is in use: {'; '.join(busy)}.",
            "Unmount its partitions (and stop swap, LVM or RAID on it), then try again.",
        )
    try:
        fd = open_exclusive(device, os.O_RDONLY)
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise TargetUnsuitable(
                f"{device} is in use by another program (it cannot be opened exclusively).",
                "Close whatever uses it, then try again.",
            ) from None
        raise TargetUnsuitable(f"Cannot open {device}: {e.strerror}.") from None
    os.close(fd)


def check_block_target(repo: Repository, target: str) -> None:
    """For any restore (a partition snapshot too): refuse a file or device that is part of
    the repository, the repository's disk, the boot disk and a disk with something mounted
    or held. Other files pass."""
    t = _target(target)
    if t.kind == "file":
        refuse_repository_target(repo, t.path)
    else:
        _refuse_protected(repo, t)


def _too_small(target: _Target, needed: int, what: str, hint: str) -> TargetTooSmall:
    return TargetTooSmall(
        f"{target.path} ({decimal_size(target.size)}, {target.size} bytes) is too small for "
        f"{what}: that needs {decimal_size(needed)} ({needed} bytes).",
        hint,
    )


def check_disk_target(
    repo: Repository,
    snapshot: Snapshot,
    target: str,
    *,
    partition: int | None = None,
    resize_partition: int | None = None,
    scratch: Scratch = None,
) -> None:
    """Raise :class:`TargetUnsuitable` (or :class:`TargetTooSmall`, naming the size needed)
    when ``target`` cannot take ``snapshot`` (or its partition ``partition``). A smaller
    disk is refused only when the shrink plan (of ``resize_partition`` when given) cannot
    hold the data, or the ``scratch`` directory cannot hold the data to shrink."""
    table = snapshot_table(snapshot)
    t = _target(target)
    if t.kind == "file":
        refuse_repository_target(repo, t.path)
    else:
        _refuse_protected(repo, t)
    if partition is not None:
        _partition_destination(snapshot, table, partition, t)
        return
    if t.kind == "partition":
        raise TargetUnsuitable(
            f"{target} is a partition; a whole-disk snapshot is restored to a disk.",
            f"Name the disk (/dev/{t.disk_name}), or restore one partition with "
            f"{snapshot.id[:12]}:N.",
        )
    if t.kind == "file":
        return  # made the size of the snapshot's disk
    logical, _ = sysfs.sector_sizes(t.name)
    if logical != table.sector_size:
        raise TargetUnsuitable(
            f"{target} has {logical}-byte sectors; the snapshot's disk had "
            f"{table.sector_size}-byte sectors, and its table cannot be moved between them.",
            "Choose a disk with the same logical sector size, or restore single partitions.",
        )
    needed = table.required_size()
    if t.size < needed and _shrinkable(snapshot, table, resize_partition):
        plan = plan_shrink(
            table, _fstypes(snapshot), _used(snapshot), t.size, resize_partition, target=t.path
        )
        assert plan.grown is not None
        if in_scratch(plan.fstype):
            image, new_size = f"p{plan.grown.number}", plan.grown.sectors * table.sector_size
            check_scratch(scratch, scratch_needs(repo, snapshot, image, new_size))
        return
    if t.size < needed:
        ss = table.sector_size
        misfits = [
            p for p in table.data_partitions if (p.end + 1) * ss > t.size - table.backup_area()
        ]
        which = ", ".join(f"partition {p.number}" for p in misfits)
        raise _too_small(
            t,
            needed,
            "the snapshot's layout",
            f"{which} would not fit. Choose a larger disk or restore single partitions "
            f"({snapshot.id[:12]}:N).",
        )


def _shrinkable(snapshot: Snapshot, table: PartitionTable, number: int | None) -> bool:
    """Whether a smaller disk gets a shrink plan rather than the refusal naming the
    partitions that would not fit: a partition is named, or one holds a filesystem
    Hourglass can shrink."""
    if number is not None:
        return True
    return shrink_partition(table, _fstypes(snapshot), _used(snapshot)) is not None


@dataclass(frozen=True)
class _Destination:
    """Where a single partition goes: ``path`` at ``offset``, with ``room`` bytes there."""

    path: str
    offset: int
    room: int
    node: str  # the partition's device node, when there is one (for growing)
    new_table: PartitionTable | None = None  # a table to create first (an empty disk)


def _partition_destination(
    snapshot: Snapshot, table: PartitionTable, number: int, t: _Target
) -> _Destination:
    size = _partition_image(snapshot, table, number).size
    hint = "Choose a larger partition or disk."
    if t.kind == "file":
        return _Destination(t.path, 0, size, "")
    if t.kind == "partition":
        if t.size < size:
            raise _too_small(t, size, f"partition {number}", hint)
        return _Destination(t.path, 0, t.size, t.path)
    existing = read_table(t.path)
    if existing is not None:
        ss = existing.sector_size
        try:
            entry = existing.partition(number)
        except KeyError:
            entry = None
        if entry is None or entry.is_container:
            raise TargetUnsuitable(
                f"{t.path} has a partition table without a partition {number} to restore into.",
                f"Name the partition to write to, or restore partition {number} to an empty "
                "disk (without a partition table).",
            )
        room = entry.sectors * ss
        if room < size:
            raise _too_small(
                replace(t, size=room, path=f"partition {number} of {t.path}"),
                size,
                f"partition {number} of the snapshot",
                hint,
            )
        node = next(
            (
                p.device
                for p in sysfs.partitions(t.name)
                if p.number == number and p.start == entry.start * ss
            ),
            "",
        )
        return _Destination(t.path, entry.start * ss, room, node)
    entry = table.partition(number)
    layout = replace(table, partitions=(replace(entry, role="primary"),))
    if table.kind == "msdos" and entry.role == "logical":
        raise TargetUnsuitable(
            f"Partition {number} was a logical partition: it cannot be recreated alone on an "
            "empty disk.",
            "Create a partition for it first and name that partition as the target.",
        )
    if t.size < layout.required_size():
        raise _too_small(
            t,
            layout.required_size(),
            f"partition {number} at its place on the snapshot's disk",
            hint,
        )
    return _Destination(t.path, entry.start * table.sector_size, size, "", layout)


def describe_target(target: str) -> str:
    """What a confirmation must name: a disk with model, serial, size, partitions and labels;
    a partition with its disk; a file with its size."""
    t = _target(target)
    if t.kind == "file":
        if not t.size:
            return f"{t.path} (a new image file)"
        return read_image_file(t.path).describe().replace(f"{t.path}:", f"the file {t.path}:", 1)
    disk = get_disk(f"/dev/{t.disk_name}", used=False)
    if t.kind == "disk":
        return disk.describe()
    part = next((p for p in disk.partitions if p.device == t.path), None)
    what = part.describe() if part else f"{decimal_size(t.size)}"
    return f"{t.path} ({what}) on {disk.device}: {disk.title()}"


# --- the restore ----------------------------------------------------------------------------


def restore_disk(
    repo: Repository,
    snapshot: Snapshot,
    target: str,
    *,
    partition: int | None = None,
    grow: bool = False,
    grow_partition: int | None = None,
    new_ids: bool = False,
    scratch: Scratch = None,
    progress: ProgressCallback = no_progress,
    options: RestoreOptions | None = None,
) -> RestoreResult:
    """Restore a whole-disk snapshot to ``target`` (a disk or an image file), or with
    ``partition`` that partition alone into a partition, a disk or a file. ``grow``
    (implied by ``grow_partition``) follows :func:`grow_plan`; a disk smaller than the
    snapshot's layout follows :func:`resize_plan` (``grow_partition`` names the partition
    to shrink), its scratch copy in ``scratch`` (the temporary directory by default).

    The caller holds the reader lease (:func:`imaging.jobs.restore` does, from choosing
    the snapshot to the end)."""
    options = options or RestoreOptions()
    check_disk_target(
        repo,
        snapshot,
        target,
        partition=partition,
        resize_partition=grow_partition,
        scratch=scratch,
    )
    table = snapshot_table(snapshot)
    t = _target(target)
    result = DiskRestoreResult(snapshot=snapshot, target=target)
    if partition is not None:
        return _restore_partition(
            repo, snapshot, table, partition, t, grow, new_ids, progress, options, result
        )
    if t.kind == "file":
        _prepare_file(t.path, snapshot.size)
        t = replace(t, size=snapshot.size)
        if grow:
            result.notes.append(
                "An image file is made the size of the original disk: nothing to grow."
            )
            grow = False
    # A disk gets its new ids after the verify (step 8); an image file only new GUIDs.
    layout = table.with_new_ids() if new_ids and t.kind == "file" else table
    if new_ids and t.kind == "file":
        result.notes.append(
            "An image file gets new disk and partition GUIDs only: its filesystem and LVM "
            "ids are the original's (restore to a disk for those)."
        )
    grown: TablePartition | None = None
    shrink: GrowPlan | None = None
    if t.kind == "disk" and t.size < layout.required_size():
        shrink = plan_shrink(
            layout, _fstypes(snapshot), _used(snapshot), t.size, grow_partition, target=t.path
        )
        layout = shrink.after
        result.plan = shrink.lines()
    elif grow or grow_partition is not None:
        plan = plan_grow(layout, _fstypes(snapshot), t.size, grow_partition)
        layout, grown = plan.after, plan.grown
        result.plan = plan.lines()
        result.notes.extend(plan.notes)
    shrunk: Shrunk | ShrunkPv | None = None
    try:
        if shrink is not None and shrink.grown is not None and in_scratch(shrink.fstype):
            # before the target is touched: data that does not fit is refused here
            in_copy: Callable[..., Shrunk | ShrunkPv] = (
                shrink_pv_in_scratch if shrink.fstype == LVM_PV else shrink_in_scratch
            )
            scratch_result = RestoreResult(snapshot=snapshot, target=t.path)
            shrunk = in_copy(
                repo,
                snapshot,
                f"p{shrink.grown.number}",
                shrink.grown.sectors * layout.sector_size,
                scratch=scratch,
                target=t.path,
                progress=progress,
                options=options,
                result=scratch_result,
            )
            result.damaged.extend(scratch_result.damaged)
        _write_disk(repo, snapshot, t, layout, shrink, shrunk, progress, options, result)
    finally:
        if shrunk is not None:
            shrunk.remove()
    if grown is not None:
        result.grown = _grow(t, layout, grown, snapshot, result)
    if new_ids and t.kind == "disk":
        new_disk_ids(t.path, result)
    return result


def new_disk_ids(disk: str, result: DiskRestoreResult) -> None:
    """Step 8 on the restored ``disk``: new ids where safe, and the references inside it
    (imaging.disks.identity); what was changed and kept goes into ``result``."""
    try:
        changes = give_new_ids(disk)
    except HourglassError as e:
        raise HourglassError(
            f"{disk} was restored and verified, but giving it new ids failed: {e}",
            "Some ids may be new while the restored system still names the old ones: "
            "restore again (with --new-ids, or without it to keep the original's ids).",
        ) from e
    result.new_ids, result.kept_ids = changes.changed, changes.kept
    result.references = changes.references
    result.notes.extend(changes.notes)


def _write_disk(
    repo: Repository,
    snapshot: Snapshot,
    t: _Target,
    layout: PartitionTable,
    shrink: GrowPlan | None,
    shrunk: Shrunk | ShrunkPv | None,
    progress: ProgressCallback,
    options: RestoreOptions,
    result: DiskRestoreResult,
) -> None:
    """Steps 2 to 6 (and the shrunk partition): table, head, images, read back, re-read."""
    resized = shrink.grown if shrink is not None else None
    item = f"p{resized.number}" if resized is not None else ""
    write_table(t.path, layout)
    result.table = layout.kind
    skip = table_area(t.path, layout)
    _write_head(t.path, _head_pieces(repo, snapshot, skip))
    targets = [
        ImageTarget(image=f"p{p.number}", path=t.path, offset=p.start * layout.sector_size)
        for p in layout.data_partitions
        if _has_image(snapshot, f"p{p.number}") and (resized is None or p.number != resized.number)
    ]
    for p in layout.data_partitions:
        if not _has_image(snapshot, f"p{p.number}"):
            result.notes.append(
                f"Partition {p.number} is not in the snapshot: it was created, and its content "
                "is whatever the target held there."
            )
    restore_images(
        repo,
        snapshot,
        targets,
        progress=progress,
        options=replace(options, verify=False),
        result=result,
    )
    if isinstance(shrunk, ShrunkPv) and resized is not None:
        offset = resized.start * layout.sector_size
        result.written += write_pv(
            shrunk, t.path, offset, verify=options.verify, progress=progress, item=item
        )
    elif isinstance(shrunk, Shrunk) and resized is not None:
        offset = resized.start * layout.sector_size
        result.written += write_shrunk(
            shrunk, t.path, offset, verify=options.verify, progress=progress, item=item
        )
    if options.verify:
        verify_written(repo, snapshot, targets, progress=progress, options=options, result=result)
        _verify_head(t.path, _head_pieces(repo, snapshot, skip))
        written = read_table(t.path)
        diffs = layout.differences(written) if written else ["no table"]
        if diffs:
            raise IntegrityError(
                f"The partition table on {t.path} differs from the one written: {diffs[0]}."
            )
    if t.kind == "disk":
        result.kernel = reread_partitions(t.path, layout)
    if shrink is not None and resized is not None:
        result.shrunk = _finish_shrink(repo, snapshot, t, shrink, resized, shrunk)


def _finish_shrink(
    repo: Repository,
    snapshot: Snapshot,
    t: _Target,
    plan: GrowPlan,
    resized: TablePartition,
    shrunk: Shrunk | ShrunkPv | None,
) -> str:
    """Re-create an xfs and copy its files; check the shrunk filesystem with its own tool.
    A smaller PV: its xfs LVs made anew, every LV checked, LVM's report of it."""
    ss = plan.after.sector_size
    before = decimal_size(plan.before.partition(resized.number).sectors * ss)
    after = decimal_size(resized.sectors * ss)
    node = next((p.device for p in sysfs.partitions(t.name) if p.number == resized.number), "")
    if not node:
        raise HourglassError(
            f"Partition {resized.number} of {t.path} has no device node: its shrunk "
            f"{plan.fstype} filesystem could not be {'made' if shrunk is None else 'checked'}.",
            "Replug the disk and restore again.",
        )
    if isinstance(shrunk, ShrunkPv):
        finish_pv(shrunk, node)
        old = plan.before.partition(resized.number).sectors * ss
        return f"partition {resized.number}: {shrunk.summary(old)}"
    if shrunk is None:
        tool = recreate_xfs(repo, snapshot, f"p{resized.number}", node)
        verb = "re-created"
    else:
        tool, verb = shrunk.tool, "shrunk"
    check_shrunk(node, plan.fstype)
    return f"partition {resized.number}: {plan.fstype} {verb} from {before} to {after} with {tool}"


def _fstypes(snapshot: Snapshot) -> dict[int, str]:
    """The filesystem of each partition the snapshot holds an image of."""
    return {
        image.number: image.fstype or ""
        for image in snapshot.images
        if image.name != "head" and image.number is not None
    }


def _used(snapshot: Snapshot) -> dict[int, int]:
    """The bytes each partition's data uses, as its image records them (partclone's map);
    a partition imaged raw has no such figure and is never shrunk."""
    return {
        image.number: image.used
        for image in snapshot.images
        if image.name != "head" and image.number is not None and image.used is not None
    }


def resize_plan(
    snapshot: Snapshot, target: str, number: int | None = None, *, grow: bool = False
) -> GrowPlan | None:
    """What restoring ``snapshot`` to the disk ``target`` does to its layout, for the
    confirmation: the shrink plan on a smaller disk, the grow plan with ``grow`` (or
    ``number``) on a larger one; None when the layout is kept as it was (or the target is
    not a whole disk)."""
    t = _target(target)
    if t.kind != "disk":
        return None
    table = snapshot_table(snapshot)
    if t.size < table.required_size():
        return plan_shrink(
            table, _fstypes(snapshot), _used(snapshot), t.size, number, target=t.path
        )
    if grow or number is not None:
        return plan_grow(table, _fstypes(snapshot), t.size, number)
    return None


def grow_plan(snapshot: Snapshot, target: str, number: int | None = None) -> GrowPlan | None:
    """What ``grow`` would do restoring ``snapshot`` to the disk ``target``, for the
    confirmation; None for a target that is not a whole disk (a file keeps the size of the
    original, a single partition grows alone)."""
    t = _target(target)
    if t.kind != "disk":
        return None
    return plan_grow(snapshot_table(snapshot), _fstypes(snapshot), t.size, number)


def _has_image(snapshot: Snapshot, name: str) -> bool:
    return any(image.name == name for image in snapshot.images)


def _prepare_file(path: str, size: int) -> None:
    """An image-file target holds exactly the disk: emptied, then sized (holes read as zero)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 0)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _head_pieces(
    repo: Repository, snapshot: Snapshot, skip: list[tuple[int, int]]
) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of the ``head`` image outside the ``skip`` ranges (the table just
    written): the boot code and the gap. Block by block, however far the first partition is."""
    if not _has_image(snapshot, "head"):
        return
    size = snapshot.image("head").size
    ids = repo.load_index(snapshot, "head")
    bs = repo.block_size
    for block, chunk_id in enumerate(ids):
        start = block * bs
        length = min(bs, size - start)
        if chunk_id in (codec.ZERO_ID, codec.UNUSED_ID):
            data = bytes(length)
        else:
            data = repo.read_chunk(chunk_id)
        for piece, piece_len in _pieces(length, [(s - start, n) for s, n in skip]):
            yield start + piece, data[piece : piece + piece_len]


def _pieces(size: int, skip: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (start, length) pieces of ``[0, size)`` outside the ``skip`` ranges."""
    pieces = []
    pos = 0
    for start, length in sorted(skip):
        if start > pos:
            pieces.append((pos, min(start, size) - pos))
        pos = max(pos, start + length)
    if pos < size:
        pieces.append((pos, size - pos))
    return [(s, n) for s, n in pieces if n > 0]


def _write_head(path: str, pieces: Iterable[tuple[int, bytes]]) -> None:
    """Write boot code and gap, leaving the freshly written table alone."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset, data in pieces:
            view = memoryview(data)
            done = 0
            while done < len(data):
                done += os.pwrite(fd, view[done:], offset + done)
        os.fsync(fd)
    finally:
        os.close(fd)


def _verify_head(path: str, pieces: Iterable[tuple[int, bytes]]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        for offset, data in pieces:
            if os.pread(fd, len(data), offset) != data:
                raise IntegrityError(
                    f"Verification of {path} failed: the boot code or the gap before the first "
                    f"partition (bytes {offset}-{offset + len(data) - 1}) differs from the "
                    "snapshot.",
                    "The target disk may be failing.",
                )
    finally:
        os.close(fd)


def _grow(
    t: _Target,
    layout: PartitionTable,
    grown: TablePartition,
    snapshot: Snapshot,
    result: DiskRestoreResult,
) -> str:
    size = decimal_size(grown.sectors * layout.sector_size)
    image = f"p{grown.number}"
    if not _has_image(snapshot, image):
        return f"partition {grown.number} extended to {size}"
    fstype = snapshot.image(image).fstype or ""
    if not can_grow(fstype):
        result.notes.append(
            f"Partition {grown.number} was extended to {size}, but its "
            f"{fstype or 'content'} cannot be grown in place: it keeps its size."
        )
        return f"partition {grown.number} extended to {size}"
    node = next((p.device for p in sysfs.partitions(t.name) if p.number == grown.number), "")
    if not node:
        raise HourglassError(
            f"Partition {grown.number} of {t.path} has no device node: its filesystem was not "
            "grown.",
            "Replug the disk and grow it by hand.",
        )
    tool = grow_filesystem(node, fstype)
    return f"partition {grown.number}: {fstype} grown to {size} with {tool}"


def _restore_partition(
    repo: Repository,
    snapshot: Snapshot,
    table: PartitionTable,
    number: int,
    t: _Target,
    grow: bool,
    new_ids: bool,
    progress: ProgressCallback,
    options: RestoreOptions,
    result: DiskRestoreResult,
) -> RestoreResult:
    dest = _partition_destination(snapshot, table, number, t)
    if dest.new_table is not None:
        layout = dest.new_table.with_new_ids() if new_ids else dest.new_table
        write_table(t.path, layout)
        result.table = layout.kind
    image = f"p{number}"
    target = ImageTarget(image=image, path=dest.path, offset=dest.offset, create=t.kind == "file")
    restore_images(repo, snapshot, [target], progress=progress, options=options, result=result)
    if t.kind == "disk":
        if dest.new_table is not None:
            result.kernel = reread_partitions(t.path, dest.new_table)
        else:
            flush_partition_caches(t.path)
    size = snapshot.image(image).size
    if grow and dest.room > size:
        fstype = snapshot.image(image).fstype or ""
        node = dest.node or next(
            (p.device for p in sysfs.partitions(t.name) if p.number == number), ""
        )
        if not can_grow(fstype):
            result.notes.append(f"{fstype or 'This content'} cannot be grown in place.")
        elif not node:
            result.notes.append("The partition has no device node: not grown.")
        else:
            tool = grow_filesystem(node, fstype)
            result.grown = f"{fstype} grown to {decimal_size(dest.room)} with {tool}"
    return result
