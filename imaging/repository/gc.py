"""Garbage collection: mark, sweep to trash, purge (docs/FORMAT.md, "Garbage collection").

Safe with backups, restores and mounts running, whenever they start: unreferenced chunks go
to a trash batch first, and a batch is deleted only when

1. every lease that was alive when the batch was **sealed** (its sweep finished) has ended:
   those processes may have found a chunk under ``chunks/`` before gc moved it, so their
   snapshots must be committed, and are read by the fresh mark below, first;
2. no live writer trusts a parent snapshot that the fresh mark does not see (a writer takes
   its parent's chunks as stored without looking: a parent forgotten meanwhile may own
   chunks of the batch);

and just before deleting, a fresh mark moves back every chunk a committed snapshot references.
A process that starts after the seal cannot find a trashed chunk under ``chunks/`` (it writes
it again), and it names its parent in its lease before it trusts it.

Leases are compared by identity (their file names), never by clocks, so hosts with skewed
clocks on a shared drive are safe. On a drive with no room for trash directories, gc deletes
unreferenced chunks directly, only while no writer or reader runs and with a flag that makes
writers starting meanwhile wait (:func:`imaging.repository.leases.wait_for_direct_gc`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imaging.errors import Busy, HourglassError, NoSpace
from imaging.repository import codec, leases
from imaging.repository.fsutil import fsync_dir
from imaging.repository.store import Repository

SKEW_MARGIN = 300.0
TMP_MAX_AGE = 86400.0
STALE_INDEX_AGE = TMP_MAX_AGE
SEAL = "sealed.json"
"""In a trash batch: the names of the leases alive when its sweep finished."""


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
    direct: bool = False
    """The drive had no room for trash: unreferenced chunks were deleted directly."""
    waited_for: set[str] = field(default_factory=set)
    """Names of the leases that kept a batch waiting (for tests and the log)."""


@dataclass
class _Mark:
    live: set[bytes]
    snapshots: set[str]


def mark(repo: Repository, result: GcResult) -> set[bytes]:
    """Every chunk id referenced by a committed snapshot."""
    return _mark(repo, result).live


def _mark(repo: Repository, result: GcResult) -> _Mark:
    live: set[bytes] = set()
    damaged = 0

    def on_damage(snapshot_id: str, error: HourglassError) -> None:
        nonlocal damaged
        damaged += 1

    snapshots = repo.snapshots(on_damage=on_damage)
    for snapshot in snapshots:
        for image in snapshot.images:
            live.update(repo.load_index(snapshot, image.name))
    live.discard(codec.ZERO_ID)
    live.discard(codec.UNUSED_ID)
    result.damaged_snapshots = damaged
    if damaged:
        # A manifest we cannot read may reference anything: deleting would be a guess.
        raise HourglassError(
            f"{damaged} snapshot manifest(s) cannot be read; gc stops rather "
            "than delete chunks they may need.",
            "Run `hourglass snapshots` to see which, and `hourglass forget` them if they are lost.",
        )
    return _Mark(live, {s.id for s in snapshots})


# --- trash batches ------------------------------------------------------------------------


def _batches(repo: Repository) -> list[Path]:
    try:
        return sorted(p for p in (repo.path / "trash").iterdir() if p.is_dir())
    except FileNotFoundError:
        return []


def _seal(batch: Path, alive: list[leases.Lease], sealed: dict[Path, set[str]]) -> None:
    """Record which leases were alive once the batch was complete. Kept in memory when the
    drive has no room for the record; a later gc seals an unsealed batch again (later is
    always safe: more leases, never fewer, must end first)."""
    names = {lease.name for lease in alive}
    sealed[batch] = names
    with contextlib.suppress(OSError):
        (batch / SEAL).write_text(json.dumps({"leases": sorted(names)}))


def _sealed_by(batch: Path, alive: list[leases.Lease], sealed: dict[Path, set[str]]) -> set[str]:
    if batch in sealed:
        return sealed[batch]
    try:
        return set(json.loads((batch / SEAL).read_text())["leases"])
    except (OSError, ValueError, KeyError, TypeError):
        # Unsealed: an older Hourglass's batch, or a gc that died while sweeping. No gc
        # adds to it any more (we hold the gc lease): seal it now.
        _seal(batch, alive, sealed)
        return sealed[batch]


def _blocking_writers(alive: list[leases.Lease], snapshots: set[str]) -> set[str]:
    """Live writers whose parent the mark did not see (rule 2 of the module docstring)."""
    return {
        lease.name
        for lease in alive
        if lease.kind in ("writer", leases.UNKNOWN)
        and lease.parent is not None
        and lease.parent not in snapshots
    }


def _purge(repo: Repository, result: GcResult, sealed: dict[Path, set[str]]) -> None:
    directory = repo.path / "leases"
    before = leases.live_leases(directory)
    names = {lease.name for lease in before}
    batches = _batches(repo)
    ready = []
    for batch in batches:
        holders = _sealed_by(batch, before, sealed) & names
        if holders:
            result.waited_for |= holders
        else:
            ready.append(batch)
    result.waiting_batches = len(batches) - len(ready)
    if not ready:
        return
    fresh = _mark(repo, result)
    blocking = _blocking_writers(leases.live_leases(directory), fresh.snapshots)
    if blocking:
        result.waited_for |= blocking
        result.waiting_batches = len(batches)
        return
    for batch in ready:
        _empty_batch(repo, batch, fresh.live, result)
        sealed.pop(batch, None)


def _empty_batch(repo: Repository, batch: Path, live: set[bytes], result: GcResult) -> None:
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
                if chunk_id:
                    result.freed += 1
                    result.freed_bytes += size
    # The chunks brought back are durable in chunks/ before their batch goes.
    for directory in sorted(restored_into, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(directory)
    shutil.rmtree(batch, ignore_errors=True)


# --- sweeping -----------------------------------------------------------------------------


def _unreferenced(
    repo: Repository, live: set[bytes], cutoff: float
) -> Iterator[tuple[os.DirEntry[str], int]]:
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
            continue  # likely a running backup's, not committed yet: spare it the round trip
        yield entry, st.st_size


def _sweep(repo: Repository, live: set[bytes], batch: Path, result: GcResult) -> bool:
    """Move unreferenced chunks into ``batch``; False if the drive has no room for it."""
    writers = leases.live_leases(repo.path / "leases", ("writer",))
    cutoff = min(lease.started for lease in writers) - SKEW_MARGIN if writers else float("inf")
    try:
        (repo.path / "trash").mkdir(exist_ok=True)
        batch.mkdir()
        for entry, size in _unreferenced(repo, live, cutoff):
            dest = batch / Path(entry.path).relative_to(repo.path / "chunks")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.rename(entry.path, dest)
                result.trashed += 1
                result.trashed_bytes += size
    except OSError as e:
        if e.errno not in leases.NO_SPACE:
            raise
        return False
    return True


def _delete_directly(repo: Repository, result: GcResult) -> None:
    """A full drive: delete unreferenced chunks without trash, which is only safe while no
    writer or reader runs, and only with the flag up that stops new writers at their start."""
    directory = repo.path / "leases"
    flag = directory / leases.GC_DIRECT
    try:
        fd = os.open(flag, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.close(fd)
    except OSError as e:
        raise NoSpace(
            f"The backup drive is full: gc cannot even create {flag}.",
            "Delete a file on the drive that is not part of the repository, then run gc again.",
        ) from e
    try:
        # The flag is up before we look: a writer that took its lease after this look
        # sees the flag and waits (leases.hold); one that took it before is seen here.
        running = leases.live_leases(directory)
        if running:
            raise Busy(
                f"The backup drive is full and {len(running)} backup(s), restore(s) or "
                "mount(s) are running: gc can free space only when none runs.",
                "Wait for them to finish (or stop them), then run gc again.",
            )
        result.direct = True
        live = _mark(repo, result).live
        for entry, size in _unreferenced(repo, live, float("inf")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                result.freed += 1
                result.freed_bytes += size
    finally:
        flag.unlink(missing_ok=True)


def collect(repo: Repository) -> GcResult:
    """Run one garbage collection; see the module docstring for the guarantees."""
    result = GcResult()
    directory = repo.path / "leases"
    sealed: dict[Path, set[str]] = {}
    with leases.hold_gc(directory) as held:
        _clean_tmp(repo)  # frees what a dead backup left before anything needs room
        _purge(repo, result, sealed)
        live = _mark(repo, result).live
        result.referenced = len(live)
        batch = repo.path / "trash" / f"{held.started:.6f}-{os.getpid()}"
        if _sweep(repo, live, batch, result):
            if result.trashed:
                _seal(batch, leases.live_leases(directory), sealed)
            else:
                shutil.rmtree(batch, ignore_errors=True)
        else:
            # No room for trash: bring back what was moved, then delete directly.
            if batch.exists():
                _empty_batch(repo, batch, live | _all_ids(batch), result)
                result.restored = result.trashed = result.trashed_bytes = 0
            _delete_directly(repo, result)
        _purge(repo, result, sealed)
        _clean_orphans(repo, result)
    return result


def _all_ids(batch: Path) -> set[bytes]:
    ids = set()
    for _, _, files in os.walk(batch):
        for name in files:
            with contextlib.suppress(ValueError):
                ids.add(bytes.fromhex(name))
    return ids


def _clean_tmp(repo: Repository) -> None:
    """``tmp/`` files of dead backups: every one when no writer runs, else those older than
    a day. A writer that starts after the look writes files newer than it."""
    writers = leases.live_leases(repo.path / "leases", ("writer",))
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        for path in (repo.path / "tmp").iterdir():
            with contextlib.suppress(FileNotFoundError):
                age = now - path.stat().st_mtime
                if (not writers and age > 0) or age > TMP_MAX_AGE:
                    path.unlink()


def _clean_orphans(repo: Repository, result: GcResult) -> None:
    """Index directories of backups that never committed (``tmp/`` is cleaned at gc's start)."""
    committed = set(repo.snapshot_ids())
    running = leases.live_leases(repo.path / "leases")
    now = time.time()
    for directory in (repo.path / "indexes").iterdir():
        if directory.name in committed:
            continue
        if running and now - directory.stat().st_mtime < STALE_INDEX_AGE:
            continue  # a running backup's, or a forgotten snapshot a restore still reads
        shutil.rmtree(directory, ignore_errors=True)
        result.orphan_indexes += 1
