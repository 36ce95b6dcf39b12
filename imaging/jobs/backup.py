"""Back up: plan, protect, store, check."""

from __future__ import annotations

import enum
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from imaging.image.backup import BackupOptions, BackupPlan, describe_unreadable, latest_of_source
from imaging.image.plan import plan_for

__all__ = [
    "BackupPlan",
    "BackupPreview",
    "BackupRequest",
    "BackupResult",
    "Check",
    "backup",
    "plan_backup",
]
from imaging.errors import Cancelled, NotFinished
from imaging.image.backup import run_backup as _run_backup
from imaging.jobs.common import Say, no_say, now, wait_for_window
from imaging.jobs.protected import refuse_repository_on_source
from imaging.progress import ProgressCallback, no_progress
from imaging.repository.store import Repository, Snapshot
from imaging.repository.throttle import Window
from imaging.repository.verify import EarlyCheck, VerifyReport
from imaging.repository.verify import verify as _verify


class Check(enum.StrEnum):
    """What is checked once a backup is committed (the same for every front end).

    ``structure`` (the default) reads the new snapshot's manifest and indexes back and
    checks that every chunk they name is stored: it costs one lookup per block, and it is
    what catches a chunk that gc or a failing drive took away. ``data`` also reads every
    chunk back, decrypts and re-hashes it: as long as the backup again, for when the drive
    is not trusted. ``none`` checks nothing.
    """

    NONE = "none"
    STRUCTURE = "structure"
    DATA = "data"


@dataclass(frozen=True)
class BackupRequest:
    """What to back up: ``sources`` as named on a command line (a disk, partitions of one
    disk, an image file), or a ``plan`` made earlier by :func:`plan_backup`."""

    sources: tuple[str, ...] = ()
    plan: BackupPlan | None = None
    check: Check = Check.STRUCTURE
    rescue: bool = False
    force: bool = False
    cancel: threading.Event | None = None
    window: Window | None = None
    """Start only inside this window (wait for it); stop when it closes: no snapshot, the
    chunks stored so far kept for the next backup (:class:`NotFinished`)."""


@dataclass(frozen=True)
class BackupPreview:
    """A plan and what a person wants to know before starting it."""

    plan: BackupPlan
    to_read: int
    free: int | None
    previous: Snapshot | None


@dataclass
class BackupResult:
    snapshot: Snapshot
    report: VerifyReport | None
    check: Check
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Committed and (when checked) without damage."""
        return self.report is None or self.report.ok


def _plan(request: BackupRequest) -> BackupPlan:

    if request.plan is not None:
        return request.plan
    return plan_for(list(request.sources), force=request.force)


def plan_backup(repo: Repository, request: BackupRequest) -> BackupPreview:
    """The plan for ``request``, refused when it would read the repository's own disk."""
    plan = _plan(request)
    refuse_repository_on_source(repo, plan)
    to_read = sum(i.used.used_bytes if i.used is not None else i.size for i in plan.images)
    root = repo.store.local_path
    try:
        free: int | None = shutil.disk_usage(root).free if root is not None else None
    except OSError:
        free = None
    previous = latest_of_source(repo.snapshots(on_damage=lambda *_: None), plan.source_id)
    return BackupPreview(plan, to_read, free, previous)


def backup(
    repo: Repository,
    request: BackupRequest,
    *,
    progress: ProgressCallback = no_progress,
    on_committed: Callable[[Snapshot], None] | None = None,
    say: Say = no_say,
) -> BackupResult:
    """Store a new snapshot, then check it as ``request.check`` says.

    ``on_committed`` is called with the snapshot as soon as it is committed, before the
    check: a front end can then say that the backup exists even if the check fails.
    Nothing is committed on failure; a failed check leaves the snapshot (it is what was
    read) and says what is damaged in the result's report.
    """
    plan = _plan(request)
    refuse_repository_on_source(repo, plan)
    early = EarlyCheck() if request.check is Check.STRUCTURE else None
    if request.window is None:
        options = BackupOptions(rescue=request.rescue, cancel=request.cancel, early_check=early)
        snapshot = _run_backup(repo, plan, progress=progress, options=options)
    else:
        snapshot = _backup_in_window(repo, plan, request, request.window, progress, say, early)
    if on_committed is not None:
        on_committed(snapshot)
    report = None
    if request.check is not Check.NONE:
        with repo.reader():
            report = _verify(
                repo,
                [snapshot],
                read_data=request.check is Check.DATA,
                progress=progress,
                confirmed=early.confirmed if early is not None else frozenset(),
            )
    warnings = list(snapshot.manifest.get("warnings", [])) + describe_unreadable(snapshot)
    return BackupResult(snapshot, report, request.check, warnings)


def _backup_in_window(
    repo: Repository,
    plan: BackupPlan,
    request: BackupRequest,
    window: Window,
    progress: ProgressCallback,
    say: Say,
    early: EarlyCheck | None,
) -> Snapshot:
    """The backup, started when ``window`` opens and cancelled when it closes (a cancelled
    backup keeps the chunks it stored: the next one does not send them again)."""
    wait_for_window(window, say=say)
    closes = window.closes(now())
    cancel = request.cancel or threading.Event()
    timer = threading.Timer(max(0.0, (closes - now()).total_seconds()), cancel.set)
    timer.daemon = True
    timer.start()
    try:
        options = BackupOptions(rescue=request.rescue, cancel=cancel, early_check=early)
        return _run_backup(repo, plan, progress=progress, options=options)
    except Cancelled:
        if now() < closes:
            raise  # cancelled by the caller, not by the clock
        raise NotFinished(
            f"The window {window} closed at {closes.strftime('%H:%M:%S')}: the backup "
            "stopped and no snapshot was recorded.",
            "The chunks stored so far are kept: run the same backup again (in the next "
            "window) and it goes on from there.",
        ) from None
    finally:
        timer.cancel()
