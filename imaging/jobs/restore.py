"""Restore a snapshot to a disk, a partition or a file: one reader lease from choosing the
snapshot to the last byte read back, the protected targets, and the kind dispatch."""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from imaging.disks.resize import GrowPlan
from imaging.disks.restore import (
    DiskRestoreResult,
    check_block_target,
    check_disk_target,
    grow_plan,
    resize_plan,
)
from imaging.disks.restore import describe_target as _describe_target
from imaging.disks.restore import restore_disk as _restore_disk
from imaging.disks.shrink import Scratch
from imaging.errors import UsageError
from imaging.image.restore import RestoreOptions, RestoreResult, check_target_size
from imaging.image.restore import restore_snapshot as _restore_snapshot
from imaging.jobs.common import Confirm, choose_snapshot
from imaging.progress import ProgressCallback, no_progress
from imaging.repository.store import Repository, Snapshot
from imaging.units import decimal_size, human_size

__all__ = [
    "DiskRestoreResult",
    "GrowPlan",
    "RestorePreview",
    "RestoreRequest",
    "RestoreResult",
    "check_restore_target",
    "describe_snapshot",
    "grow_plan",
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
        chosen = choose_snapshot(
            repo, request.snapshot, source=request.source, partition=request.partition
        )
        snapshot, partition = chosen.snapshot, chosen.partition
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
            extras.append("The disk and its partitions get new GUIDs (or a new MBR signature).")
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
            verify=request.verify, ignore_damage=request.ignore_damage, cancel=request.cancel
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
                new_ids=request.new_ids,
                scratch=scratch,
                progress=progress,
                options=options,
            )
        else:
            result = _restore_snapshot(
                repo, snapshot, request.target, progress=progress, options=options
            )
        result.degraded = list(repo.store.degraded())
        return result
