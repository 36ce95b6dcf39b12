"""Restore files and folders from a snapshot into a directory."""

from __future__ import annotations

from dataclasses import dataclass

from imaging.files.browse import Entry, SnapshotBrowser, printable
from imaging.files.images import file_images
from imaging.files.restore import FileRestoreResult, restore_files, restore_from
from imaging.files.versions import Version, file_versions
from imaging.jobs.common import choose_snapshot
from imaging.progress import ProgressCallback, no_progress
from imaging.repository.store import Repository

__all__ = [
    "Entry",
    "FileRestoreResult",
    "FilesRestoreRequest",
    "SnapshotBrowser",
    "Version",
    "file_images",
    "file_versions",
    "files_restore",
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
