"""Restore files and folders from a snapshot into a directory."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from imaging.files.browse import Entry, SnapshotBrowser, printable
from imaging.files.images import file_images
from imaging.files.restore import FileRestoreResult, restore_files, restore_from
from imaging.files.versions import Version, file_versions
from imaging.jobs.common import choose_snapshot
from imaging.journal.browse import (
    JournalBrowser,
    JournalGap,
    JournalHost,
    JournalTree,
    journal_hosts,
)
from imaging.journal.restore import (
    JournalRestoreResult,
    JournalVersion,
    journal_versions,
    restore_at,
)
from imaging.progress import ProgressCallback, no_progress
from imaging.repository.selectors import parse_time
from imaging.repository.store import Repository

__all__ = [
    "Entry",
    "FileRestoreResult",
    "FilesRestoreRequest",
    "JournalBrowser",
    "JournalGap",
    "JournalHost",
    "JournalRestoreResult",
    "JournalTree",
    "JournalVersion",
    "SnapshotBrowser",
    "Version",
    "file_images",
    "file_versions",
    "files_restore",
    "files_restore_at",
    "journal_hosts",
    "journal_versions",
    "parse_time",
    "printable",
    "restore_from",
]


@dataclass(frozen=True)
class FilesRestoreRequest:
    snapshot: str
    paths: tuple[str, ...]
    dest: str
    partition: int | None = None
    source: str | None = None
    overwrite: bool = False


def files_restore(
    repo: Repository, request: FilesRestoreRequest, *, progress: ProgressCallback = no_progress
) -> FileRestoreResult:
    """Copy ``paths`` out of the snapshot into ``dest``, never into the repository, under a
    reader lease from choosing the snapshot to the last byte copied."""
    # restore_files refuses a destination inside the repository before it opens anything.
    with repo.reader():
        chosen = choose_snapshot(
            repo, request.snapshot, source=request.source, partition=request.partition
        )
        return restore_files(
            repo,
            chosen.snapshot,
            chosen.partition,
            list(request.paths),
            request.dest,
            overwrite=request.overwrite,
            progress=progress,
        )


def files_restore_at(
    repo: Repository,
    paths: tuple[str, ...],
    when: datetime,
    dest: str,
    *,
    overwrite: bool = False,
    source: str | None = None,
) -> JournalRestoreResult:
    """Restore host ``paths`` as the file journal had them at the second ``when``, under a
    reader lease."""
    with repo.reader():
        return restore_at(repo, list(paths), when, dest, overwrite=overwrite, source=source)
