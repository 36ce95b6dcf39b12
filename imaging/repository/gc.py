"""Garbage collection: mark, sweep to trash, purge (docs/FORMAT.md, "Garbage collection").

Safe with backups and restores running: chunks go to ``trash/<run>/`` first and are deleted
only when every writer and reader that was running at that moment has finished, after a
fresh mark has moved back anything a newly committed snapshot references.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from imaging.errors import HourglassError
from imaging.repository import codec, leases
from imaging.repository.fsutil import fsync_dir
from imaging.repository.store import Repository

SKEW_MARGIN = 300.0
TMP_MAX_AGE = 86400.0


@dataclass
class GcResult:
    referenced: int = 0
    trashed: int = 0
    trashed_bytes: int = 0
    freed: int = 0
    freed_bytes: int = 0
    restored: int = 0
    waiting_batches: int = 0
    orphan_indexes: int = 0
    damaged_snapshots: int = 0


def mark(repo: Repository, result: GcResult) -> set[bytes]:
    """Every chunk id referenced by a committed snapshot."""
    live: set[bytes] = set()

    def damaged(snapshot_id: str, error: HourglassError) -> None:
        result.damaged_snapshots += 1

    for snapshot in repo.snapshots(on_damage=damaged):
        for image in snapshot.images:
            ids = repo.load_index(snapshot, image["name"])
            for i in range(0, len(ids), 32):
                live.add(ids[i : i + 32])
    live.discard(codec.ZERO_ID)
    live.discard(codec.UNUSED_ID)
    if result.damaged_snapshots:
        # A manifest we cannot read may reference anything: deleting would be a guess.
        raise HourglassError(
            f"{result.damaged_snapshots} snapshot manifest(s) cannot be read; gc stops rather "
            "than delete chunks they may need.",
            "Run `hourglass verify` to see which, and forget them if they are lost.",
        )
    return live


def _batch_time(batch: Path) -> float:
    try:
        return float(batch.name.split("-")[0])
    except ValueError:
        return 0.0


def _purge(repo: Repository, result: GcResult, oldest_running: float | None) -> None:
    batches = [p for p in (repo.path / "trash").iterdir() if p.is_dir()]
    ready = [b for b in batches if oldest_running is None or oldest_running > _batch_time(b)]
    result.waiting_batches = len(batches) - len(ready)
    if not ready:
        return
    live = mark(repo, result)
    for batch in ready:
        restored_into: set[Path] = set()
        for dirpath, _, files in os.walk(batch):
            for name in files:
                path = Path(dirpath) / name
                try:
                    chunk_id = bytes.fromhex(name)
                except ValueError:
                    chunk_id = b""
                if chunk_id in live:
                    dest = repo.chunk_path(chunk_id)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if not dest.exists():
                        os.rename(path, dest)
                        restored_into.update((dest.parent, dest.parent.parent))
                    result.restored += 1
                    continue
                with contextlib.suppress(FileNotFoundError):
                    size = path.stat().st_size
                    path.unlink()
                    result.freed += 1
                    result.freed_bytes += size
        # The chunks brought back are durable in chunks/ before their batch goes.
        for directory in sorted(restored_into, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(directory)
        shutil.rmtree(batch, ignore_errors=True)


def _oldest_running(repo: Repository) -> float | None:
    running = leases.live_leases(repo.path / "leases", ("writer", "reader"))
    return min((lease.started for lease in running), default=None)


def collect(repo: Repository) -> GcResult:
    """Run one garbage collection; see the module docstring for the guarantees."""
    result = GcResult()
    (repo.path / "trash").mkdir(exist_ok=True)
    with leases.hold_gc(repo.path / "leases") as started:
        _purge(repo, result, _oldest_running(repo))
        live = mark(repo, result)
        result.referenced = len(live)
        writers = leases.live_leases(repo.path / "leases", ("writer",))
        cutoff = min(lease.started for lease in writers) - SKEW_MARGIN if writers else float("inf")
        batch = repo.path / "trash" / f"{started:.6f}-{os.getpid()}"
        for entry in repo.iter_chunk_files():
            try:
                chunk_id = bytes.fromhex(entry.name)
            except ValueError:
                continue
            if chunk_id in live:
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            if st.st_mtime >= cutoff:
                continue  # may belong to a backup that has not committed yet
            dest = batch / Path(entry.path).relative_to(repo.path / "chunks")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.rename(entry.path, dest)
                result.trashed += 1
                result.trashed_bytes += st.st_size
        _purge(repo, result, _oldest_running(repo))
        _clean_orphans(repo, result)
    return result


def _clean_orphans(repo: Repository, result: GcResult) -> None:
    """Index directories of backups that never committed, and stale temporary files."""
    committed = set(repo.snapshot_ids())
    running = leases.live_leases(repo.path / "leases", ("writer", "reader"))
    writers = [lease for lease in running if lease.kind == "writer"]
    now = time.time()
    for directory in (repo.path / "indexes").iterdir():
        if directory.name in committed:
            continue
        if running and now - directory.stat().st_mtime < STALE_INDEX_AGE:
            continue  # a running backup's, or a forgotten snapshot a restore still reads
        shutil.rmtree(directory, ignore_errors=True)
        result.orphan_indexes += 1
    for path in (repo.path / "tmp").iterdir():
        with contextlib.suppress(FileNotFoundError):
            if not writers or now - path.stat().st_mtime > TMP_MAX_AGE:
                path.unlink()


STALE_INDEX_AGE = TMP_MAX_AGE
