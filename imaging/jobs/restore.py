"""Restore a snapshot to a disk, a partition or a file: one reader lease from choosing the
snapshot to the last byte read back, the protected targets, and the kind dispatch."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from imaging.disks import sysfs
from imaging.disks.resize import GrowPlan
from imaging.disks.restore import (
    DiskRestoreResult,
    check_block_target,
    check_disk_target,
    grow_plan,
    new_disk_ids,
    resize_plan,
)
from imaging.disks.restore import describe_target as _describe_target
from imaging.disks.restore import restore_disk as _restore_disk
from imaging.disks.shrink import Scratch
from imaging.errors import UsageError
from imaging.image.restore import ChunkFeed, RestoreOptions, RestoreResult, check_target_size
from imaging.image.restore import restore_snapshot as _restore_snapshot
from imaging.jobs.common import Chosen, Confirm, choose_snapshot
from imaging.progress import ProgressCallback, no_progress
from imaging.repository.records import SnapshotList
from imaging.repository.store import Repository, Snapshot
from imaging.units import decimal_size, human_size

if TYPE_CHECKING:
    # The replay needs the file-level view: loaded only by a restore as of a second, so
    # that every other restore starts as fast as before.
    from imaging.journal.replay import ReplayPlan

__all__ = [
    "DiskRestoreResult",
    "GrowPlan",
    "ReplayPlan",
    "RestorePreview",
    "RestoreRequest",
    "RestoreResult",
    "check_restore_target",
    "describe_snapshot",
    "grow_plan",
    "replay_plan",
    "resize_plan",
    "restore",
]


@dataclass(frozen=True)
class RestoreRequest:
    """``snapshot``: an id or prefix, ``latest`` or a local time, with an optional ``:N``
    naming partition N of a disk snapshot (``partition`` says the same)."""

    snapshot: str
    target: str
    source: str | None = None
    partition: int | None = None
    grow: bool = False
    grow_partition: int | None = None  # resize this one, not the plan's choice (implies grow)
    new_ids: bool = False
    scratch: str | None = None  # where a filesystem shrinks before it is written
    verify: bool = True
    ignore_damage: bool = False
    cancel: threading.Event | None = None
    at: datetime | None = None
    """The whole system as of this second: the newest disk image at or before it (or
    ``snapshot`` when named), then the file journal replayed onto it up to that second."""
    host: str | None = None
    """Whose file journal is replayed (by default the host the image's /etc/hostname names)."""
    feed: ChunkFeed | None = None
    """Where the chunks come from when not read from the repository in order (a lab
    receiver's multicast: :mod:`imaging.lab.receiver`)."""


@dataclass(frozen=True)
class RestorePreview:
    """What is about to be overwritten, for the confirmation."""

    snapshot: Snapshot
    partition: int | None
    target: str
    target_description: str
    snapshot_description: str
    size: int
    extras: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def question(self) -> str:
        """The whole question in English, as the CLI asks it."""
        what = f"partition {self.partition} of " if self.partition else ""
        return (
            f"This will overwrite\n{self.target_description}\n"
            f"with {what}{self.snapshot_description}\n"
            + "".join(f"{line}\n" for line in self.extras)
            + "Everything now on the target is lost."
        )


def describe_snapshot(snapshot: Snapshot, partition: int | None = None) -> str:
    """A snapshot as a confirmation names it: source, model, size, time, its partitions."""
    when = snapshot.time.strftime("%Y-%m-%d %H:%M:%S")
    if snapshot.kind != "disk":
        return (
            f"snapshot {snapshot.id[:12]} of {snapshot.source} taken {when} "
            f"({human_size(snapshot.size)})."
        )
    disk = snapshot.record.disk
    model = (disk and disk.model) or "disk"
    serial = f" ({disk.serial})" if disk and disk.serial else ""
    lines = [
        f"snapshot {snapshot.id[:12]} of {snapshot.source}, {model}{serial}, "
        f"{decimal_size(snapshot.size)}, taken {when}:"
    ]
    for image in snapshot.images:
        if image.name == "head" or (partition is not None and image.number != partition):
            continue
        label = f' "{image.label}"' if image.label else ""
        lines.append(
            f"  partition {image.number}, {decimal_size(image.size)}, "
            f"{image.fstype or image.type_name or 'raw'}{label}"
        )
    return "\n".join(lines)


def scratch_places(repo: Repository, scratch: Scratch) -> Scratch:
    """Where a filesystem shrinks: ``scratch`` when named; else beside the repository on its
    drive, then the temporary directory (on the appliance the temporary directory is in RAM,
    too small for a copy of a large C:; the backup drive usually has the room). The first
    with room that keeps sparse files is taken, and only when something shrinks. Places
    already chosen are returned as they are."""
    if scratch is not None:
        return scratch
    root = repo.store.local_path
    if root is None:  # an object store, a set of locations
        return None
    return (str(Path(root).parent), tempfile.gettempdir())


def check_restore_target(
    repo: Repository,
    snapshot: Snapshot,
    target: str,
    *,
    partition: int | None = None,
    resize_partition: int | None = None,
    scratch: Scratch = None,
) -> None:
    """Raise what :func:`restore` would raise about ``target`` before it writes anything:
    a protected disk (the boot medium, the repository's disk, one in use), a file inside
    the repository, a target too small (naming the size needed: a smaller disk is taken
    when the shrink plan, of ``resize_partition`` when given, holds the data), a partition of
    a snapshot that has none."""
    if snapshot.kind == "disk":
        check_disk_target(
            repo,
            snapshot,
            target,
            partition=partition,
            resize_partition=resize_partition,
            scratch=scratch_places(repo, scratch),
        )
        return
    if partition is not None:
        raise UsageError(f"Snapshot {snapshot.id[:12]} is not a disk: it has no partitions.")
    check_block_target(repo, target)
    check_target_size(target, snapshot.images[0].size)


def restore(
    repo: Repository,
    request: RestoreRequest,
    *,
    confirm: Confirm[RestorePreview],
    progress: ProgressCallback = no_progress,
) -> RestoreResult:
    """Choose the snapshot, check the target, ask ``confirm``, write, read back.

    One reader lease covers all of it: a forget and gc racing the restore cannot take the
    snapshot's index or chunks away between choosing and reading.
    """
    with repo.reader():
        chosen = _choose(repo, request)
        snapshot, partition = chosen.snapshot, chosen.partition
        replay: ReplayPlan | None = None
        scratch = scratch_places(repo, request.scratch)  # the same places checked and used
        check_restore_target(
            repo,
            snapshot,
            request.target,
            partition=partition,
            resize_partition=request.grow_partition,
            scratch=scratch,
        )
        extras = []
        grow = request.grow or request.grow_partition is not None
        plan = None
        if snapshot.kind == "disk" and partition is None:
            plan = resize_plan(snapshot, request.target, request.grow_partition, grow=grow)
        if plan is not None:
            extras.extend(plan.lines() or list(plan.notes))
        elif grow and snapshot.kind == "disk" and partition is None:
            extras.append("An image file is made the size of the original disk: nothing grows.")
        elif grow:
            extras.append("The filesystem will be grown to fill the target partition.")
        if request.new_ids:
            extras.append(
                "The restored disk gets new ids: disk and partition GUIDs (or MBR signature), "
                "filesystem UUIDs where nothing outside them needs the old ones, LVM PV and VG "
                "UUIDs; /etc/fstab, crypttab and GRUB inside it are updated to them."
            )
        if request.at is not None:
            replay = replay_plan(repo, snapshot, request.at, host=request.host)
            if replay is None:
                extras.append(
                    "The repository holds no file journal: the image alone is restored, as "
                    f"of {snapshot.time.strftime('%Y-%m-%d %H:%M:%S')}."
                )
            else:
                extras.extend(replay.lines())
        size = snapshot.size
        if partition is not None:
            size = snapshot.image(f"p{partition}").size
        confirm(
            RestorePreview(
                snapshot=snapshot,
                partition=partition,
                target=request.target,
                target_description=_describe_target(request.target),
                snapshot_description=describe_snapshot(snapshot, partition),
                size=size,
                extras=extras,
                warnings=chosen.warnings,
            )
        )
        options = RestoreOptions(
            verify=request.verify,
            ignore_damage=request.ignore_damage,
            cancel=request.cancel,
            feed=request.feed,
        )
        result: RestoreResult
        if snapshot.kind == "disk":
            result = _restore_disk(
                repo,
                snapshot,
                request.target,
                partition=partition,
                grow=request.grow,
                grow_partition=request.grow_partition,
                # after a replay, which may write back a file naming the old ids
                new_ids=request.new_ids and replay is None,
                scratch=scratch,
                progress=progress,
                options=options,
            )
            if replay is not None and isinstance(result, DiskRestoreResult):
                result.replayed = _replay(repo, replay, request.target)
                if request.new_ids:
                    new_disk_ids(request.target, result)
        else:
            result = _restore_snapshot(
                repo, snapshot, request.target, progress=progress, options=options
            )
        result.degraded = list(repo.store.degraded())
        return result


def _choose(repo: Repository, request: RestoreRequest) -> Chosen:
    """The snapshot a request names; with ``at``, the newest whole-disk image at or before it
    unless one is named (which must be no newer)."""
    if request.at is None:
        return choose_snapshot(
            repo, request.snapshot, source=request.source, partition=request.partition
        )
    when = request.at.strftime("%Y-%m-%d %H:%M:%S")
    if request.partition is not None:
        raise UsageError("A restore as of a second restores a whole disk, not a partition.")
    if not _is_block_device(request.target):
        raise UsageError(
            f"{request.target} is not a disk: the file journal is replayed onto the "
            "filesystems of a restored disk.",
            "Restore to a disk, or restore files with "
            '`hourglass files restore --at "TIME" PATH... --to DIR`.',
        )
    listed = repo.snapshots()
    disks = SnapshotList([s for s in listed if s.kind == "disk"], listed.damaged)
    selector = request.snapshot or request.at.isoformat(timespec="seconds")
    chosen = choose_snapshot(repo, selector, source=request.source, listed=disks)
    if chosen.partition is not None:
        raise UsageError("A restore as of a second restores a whole disk, not a partition.")
    if chosen.snapshot.kind != "disk":
        raise UsageError(
            f"Snapshot {chosen.snapshot.id[:12]} is not a whole-disk image: the file journal "
            "is replayed onto a restored disk."
        )
    if chosen.snapshot.time > request.at:
        raise UsageError(
            f"Snapshot {chosen.snapshot.id[:12]} was taken "
            f"{chosen.snapshot.time.strftime('%Y-%m-%d %H:%M:%S')}, after {when}.",
            "Name an image taken at or before that second, or none.",
        )
    return chosen


def replay_plan(
    repo: Repository, snapshot: Snapshot, at: datetime, *, host: str | None = None
) -> ReplayPlan | None:
    """What a restore of ``snapshot`` as of the second ``at`` replays from the file journal
    (None: the repository holds none); refused (UsageError) where it cannot be replayed."""
    from imaging.journal.replay import plan_replay  # noqa: PLC0415 (see TYPE_CHECKING above)

    return plan_replay(repo, snapshot, at, host=host)


def _is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def _replay(repo: Repository, plan: ReplayPlan, target: str) -> str:
    """Replay ``plan`` onto the disk just restored at ``target``; what was done, in words."""
    disk = sysfs.name_of(target)
    nodes = {p.number: p.device for p in sysfs.partitions(disk)}

    def device(number: int) -> str:
        node = nodes.get(number)
        if not node:
            raise UsageError(
                f"Partition {number} of {target} has no device node: the file journal was not "
                "replayed onto it.",
                "The image is restored; replug the disk and restore the files with "
                '`hourglass files restore --at "TIME"`.',
            )
        return node

    from imaging.journal.replay import apply_replay  # noqa: PLC0415 (see TYPE_CHECKING above)

    workdir = tempfile.mkdtemp(prefix="hourglass-replay-")
    try:
        return apply_replay(repo, plan, device, workdir).line()
    finally:
        # Never a recursive removal: a filesystem still mounted there is the restored disk.
        with contextlib.suppress(OSError):
            os.rmdir(workdir)
