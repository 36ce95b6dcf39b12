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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from imaging.errors import Busy, HourglassError, NoSpace, UsageError
from imaging.progress import Meter, ProgressCallback, no_progress
from imaging.repository import codec, leases, storage
from imaging.repository.records import ChunkIndex, SnapshotList
from imaging.repository.redundant import RedundantStore
from imaging.repository.s3store import S3Store
from imaging.repository.storage import SEAL, Kind, LocalStore, Name, ObjectInfo
from imaging.repository.store import Repository, Snapshot
from imaging.units import count

SKEW_MARGIN = 300.0
TMP_MAX_AGE = 86400.0
STALE_INDEX_AGE = TMP_MAX_AGE


@dataclass
class GcResult:
    referenced: int = 0
    trashed: int = 0
    trashed_bytes: int = 0
    freed: int = 0
    freed_bytes: int = 0
    """Bytes given back to the drive: chunks deleted, and what dead backups left in tmp/."""
    tmp_files: int = 0
    """Files of dead backups removed from ``tmp/`` (their bytes are in ``freed_bytes``)."""
    restored: int = 0
    waiting_batches: int = 0
    orphan_indexes: int = 0
    damaged_snapshots: int = 0
    direct: bool = False
    """The drive had no room for trash: unreferenced chunks were deleted directly."""
    waited_for: set[str] = field(default_factory=set)
    """Names of the leases that kept a batch waiting (for tests and the log)."""
    deleted_packs: int = 0
    """Object stores: packs deleted."""
    repacked_packs: int = 0
    """Object stores: mostly unreferenced packs whose live chunks were written anew."""
    rewritten_bytes: int = 0
    """Object stores: bytes of live chunks written into new packs."""


@dataclass
class _Mark:
    live: set[bytes]
    snapshots: set[str]


def mark(repo: Repository, result: GcResult) -> set[bytes]:
    """Every chunk id referenced by a committed snapshot."""
    return _mark(repo, result).live


def _mark(repo: Repository, result: GcResult, progress: ProgressCallback = no_progress) -> _Mark:
    live: set[bytes] = set()
    damaged = 0

    def on_damage(snapshot_id: str, error: HourglassError) -> None:
        nonlocal damaged
        damaged += 1

    snapshots = repo.snapshots(on_damage=on_damage)
    meter = Meter("gc-mark", sum(len(s.images) for s in snapshots), progress)
    for snapshot in snapshots:
        for image in snapshot.images:
            live.update(repo.load_index(snapshot, image.name))
            meter.add(1)
    meter.finish()
    live.discard(codec.ZERO_ID)
    live.discard(codec.UNUSED_ID)
    result.damaged_snapshots = damaged
    if damaged:
        # A manifest we cannot read may reference anything: deleting would be a guess.
        raise HourglassError(
            f"{count(damaged, 'snapshot manifest')} cannot be read; gc stops rather "
            "than delete chunks they may need.",
            "Run `hourglass snapshots` to see which, and `hourglass forget` them if they are lost.",
        )
    return _Mark(live, {s.id for s in snapshots})


# --- trash batches ------------------------------------------------------------------------
# Trash of chunk files is local-only (storage.py); an object store's is in s3gc.py.


def _seal(
    store: LocalStore, batch: str, alive: list[leases.Lease], sealed: dict[str, set[str]]
) -> None:
    """Record which leases were alive once the batch was complete. Kept in memory when the
    drive has no room for the record; a later gc seals an unsealed batch again (later is
    always safe: more leases, never fewer, must end first)."""
    names = {lease.name for lease in alive}
    sealed[batch] = names
    record = json.dumps({"leases": sorted(names)}).encode()
    with contextlib.suppress(OSError, NoSpace):
        store.put(Name(Kind.TRASH, f"{batch}/{SEAL}"), record)


def _sealed_by(
    store: LocalStore, batch: str, alive: list[leases.Lease], sealed: dict[str, set[str]]
) -> set[str]:
    if batch in sealed:
        return sealed[batch]
    try:
        return set(json.loads(store.get(Name(Kind.TRASH, f"{batch}/{SEAL}")))["leases"])
    except (OSError, ValueError, KeyError, TypeError):
        # Unsealed: an older Hourglass's batch, or a gc that died while sweeping. No gc
        # adds to it any more (we hold the gc lease): seal it now.
        _seal(store, batch, alive, sealed)
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


def ready_to_empty(
    repo: Repository,
    batches: Sequence[str],
    alive: list[leases.Lease],
    sealed_by: Callable[[str], set[str]],
    live_now: Callable[[], list[leases.Lease]],
    result: GcResult,
) -> tuple[list[str], _Mark] | None:
    """The trash batches that may be emptied now, and a fresh mark of what is live: a batch
    waits while a lease named in its seal (``sealed_by``) is among those ``alive``, and
    every batch waits while a writer (``live_now``, read after the mark) may commit a
    snapshot the mark did not see. None when nothing may go (``result`` says what gc waits
    for). The local gc and the object store's (s3gc) share this rule."""
    names = {lease.name for lease in alive}
    ready = []
    for batch in batches:
        holders = sealed_by(batch) & names
        if holders:
            result.waited_for |= holders
        else:
            ready.append(batch)
    result.waiting_batches = len(batches) - len(ready)
    if not ready:
        return None
    fresh = _mark(repo, result)
    blocking = _blocking_writers(live_now(), fresh.snapshots)
    if blocking:
        result.waited_for |= blocking
        result.waiting_batches = len(batches)
        return None
    return ready, fresh


def _purge(repo: Repository, result: GcResult, sealed: dict[str, set[str]]) -> None:
    store = repo.local_store
    before = leases.live_leases(store.leases_dir)
    found = ready_to_empty(
        repo,
        store.trash_batches(),
        before,
        lambda batch: _sealed_by(store, batch, before, sealed),
        lambda: leases.live_leases(store.leases_dir),
        result,
    )
    if found is None:
        return
    ready, fresh = found
    for batch in ready:
        _empty_batch(store, batch, fresh.live, result)
        sealed.pop(batch, None)


def _trashed_chunks(store: LocalStore, batch: str) -> Iterator[tuple[ObjectInfo, bytes]]:
    """The objects of a trash batch and the chunk id each holds (b"" for the seal)."""
    for info in store.list(Kind.TRASH, f"{batch}/"):
        try:
            chunk_id = bytes.fromhex(info.name.key.removeprefix(f"{batch}/"))
        except ValueError:
            chunk_id = b""
        yield info, chunk_id


def _empty_batch(store: LocalStore, batch: str, live: set[bytes], result: GcResult) -> None:
    for info, chunk_id in list(_trashed_chunks(store, batch)):
        if chunk_id in live:
            # Durable in chunks/ before its batch goes.
            store.move(info.name, storage.chunk(chunk_id), if_absent=True, durable=True)
            result.restored += 1
            continue
        with contextlib.suppress(FileNotFoundError):
            size = info.size
            if store.delete(info.name, durable=False) and chunk_id:
                result.freed += 1
                result.freed_bytes += size
    store.delete_group(Kind.TRASH, batch)


# --- sweeping -----------------------------------------------------------------------------


def _unreferenced(
    repo: Repository, live: set[bytes], cutoff: float, meter: Meter | None = None
) -> Iterator[tuple[ObjectInfo, int]]:
    for info in repo.store.list(Kind.CHUNKS):
        if meter is not None:
            meter.total = max(meter.total, meter.done + 1)  # the listing's length is unknown
            meter.add(1)
        try:
            chunk_id = bytes.fromhex(info.name.key)
        except ValueError:
            continue
        if chunk_id in live:
            continue
        try:
            size, mtime = info.size, info.mtime
        except FileNotFoundError:
            continue
        if mtime >= cutoff:
            continue  # likely a running backup's, not committed yet: spare it the round trip
        yield info, size


def _sweep(
    repo: Repository,
    live: set[bytes],
    batch: str,
    result: GcResult,
    progress: ProgressCallback = no_progress,
) -> bool:
    """Move unreferenced chunks into ``batch``; False if the drive has no room for it.
    ``progress`` counts the chunks looked at, against the referenced ones (the listing's
    length is known only at its end)."""
    store = repo.local_store
    writers = leases.live_leases(store.leases_dir, ("writer",))
    cutoff = min(lease.started for lease in writers) - SKEW_MARGIN if writers else float("inf")
    meter = Meter("gc-sweep", len(live), progress)
    try:
        store.make_group(Kind.TRASH, batch)
        for info, size in _unreferenced(repo, live, cutoff, meter):
            with contextlib.suppress(FileNotFoundError):
                store.move(info.name, storage.trashed(batch, info.name.key))
                result.trashed += 1
                result.trashed_bytes += size
    except OSError as e:
        if e.errno not in leases.NO_SPACE:
            raise
        return False
    meter.total = meter.done
    meter.finish()
    return True


def _delete_directly(repo: Repository, result: GcResult) -> None:
    """A full drive: delete unreferenced chunks without trash, which is only safe while no
    writer or reader runs, and only with the flag up that stops new writers at their start."""
    directory = repo.local_store.leases_dir
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
                f"The backup drive is full and "
                f"{count(len(running), 'backup, restore or mount', 'backups, restores or mounts')} "
                f"{'is' if len(running) == 1 else 'are'} running: gc can free space only when "
                "none runs.",
                "Wait for them to finish (or stop them), then run gc again.",
            )
        result.direct = True
        live = _mark(repo, result).live
        for info, size in _unreferenced(repo, live, float("inf")):
            if repo.store.delete(info.name, durable=False):
                result.freed += 1
                result.freed_bytes += size
    finally:
        flag.unlink(missing_ok=True)


ObjectStoreGc = Callable[[Repository], "GcResult"]
"""An object store's gc (imaging.repository.s3gc.collect, which builds on this module)."""


def collect(
    repo: Repository,
    progress: ProgressCallback = no_progress,
    *,
    object_store: ObjectStoreGc | None = None,
) -> GcResult:
    """Run one garbage collection of a directory or a set; see the module docstring for
    the guarantees (imaging/repository/s3gc.py has an object store's, which builds on this
    module; imaging.jobs.gc chooses between them, and gives a set's object-store members
    to ``object_store``). ``progress`` gets the phases ``gc-mark`` (images read) and
    ``gc-sweep`` (chunks looked at)."""
    store = repo.store.unwrapped()
    if isinstance(store, RedundantStore):
        return _collect_set(repo, store, progress, object_store)
    if not isinstance(store, LocalStore):
        raise UsageError(
            f"{repo.location}: an object store's gc is imaging.repository.s3gc.collect "
            "(imaging.jobs.gc chooses)."
        )
    result = GcResult()
    store = repo.local_store
    sealed: dict[str, set[str]] = {}
    with leases.hold_gc(store.leases_dir) as held:
        _clean_tmp(store, result)  # frees what a dead backup left before anything needs room
        _purge(repo, result, sealed)
        live = _mark(repo, result, progress).live
        result.referenced = len(live)
        batch = f"{held.started:.6f}-{os.getpid()}"
        if _sweep(repo, live, batch, result, progress):
            if result.trashed:
                _seal(store, batch, leases.live_leases(store.leases_dir), sealed)
            else:
                store.delete_group(Kind.TRASH, batch)
        else:
            # No room for trash: bring back what was moved, then delete directly.
            if batch in store.trash_batches():
                _empty_batch(store, batch, live | _all_ids(store, batch), result)
                result.restored = result.trashed = result.trashed_bytes = 0
            _delete_directly(repo, result)
        _purge(repo, result, sealed)
        _clean_orphans(repo, result)
    return result


class _MemberRepository(Repository):
    """One member of a set, as gc sees it: its own chunks, trash and leases, and the set's
    snapshots and indexes (a member may lack a manifest the others have, and a K+M
    member's indexes are shards): the mark is always the whole set's."""

    def __init__(self, whole: Repository, member: LocalStore | S3Store) -> None:
        super().__init__(member, whole.config, whole.keys, whole.unlocked_slot, whole.config_hash)
        self.whole = whole

    def snapshot_ids(self) -> list[str]:
        return self.whole.snapshot_ids()

    def snapshots(self, **kwargs: Any) -> SnapshotList:
        return self.whole.snapshots(**kwargs)

    def load_index(self, snapshot: Snapshot, image: str) -> ChunkIndex:
        return self.whole.load_index(snapshot, image)


def _collect_set(
    repo: Repository,
    store: RedundantStore,
    progress: ProgressCallback,
    object_store: ObjectStoreGc | None,
) -> GcResult:
    """gc on every member in turn, each with the set's mark: a directory's as on one drive,
    an object store's by packs (s3gc). Writers take a lease on every member (redundant.py),
    so each member's gc sees every writer, as on one drive."""
    members: list[LocalStore | S3Store] = []
    for number, member in enumerate(store.members):
        if not isinstance(member, LocalStore | S3Store) or (
            isinstance(member, S3Store) and object_store is None
        ):
            raise UsageError(
                f"Member {number} of {store.describe()} ({member.describe()}) is not a "
                "directory, and this gc was given no gc for object stores (imaging.jobs.gc "
                "gives it)."
            )
        if not member.reachable():
            raise HourglassError(
                f"Member {number} of {store.describe()} ({member.describe()}) does not "
                "answer: gc needs every member.",
                "Bring it back or rebuild it (`hourglass check --repair`), then run gc again.",
            )
        members.append(member)
    total = GcResult()
    for number, member in enumerate(members):
        member_repo = _MemberRepository(repo, member)
        if isinstance(member, S3Store):
            assert object_store is not None
            one = object_store(member_repo)
        else:
            one = collect(member_repo, progress)
        total.trashed_bytes += one.trashed_bytes
        total.freed_bytes += one.freed_bytes
        total.waiting_batches = max(total.waiting_batches, one.waiting_batches)
        total.waited_for |= one.waited_for
        total.direct |= one.direct
        if number == 0:  # the counts of chunks are the same on every member
            total.referenced, total.trashed, total.freed = one.referenced, one.trashed, one.freed
            total.restored, total.orphan_indexes = one.restored, one.orphan_indexes
    return total


def _all_ids(store: LocalStore, batch: str) -> set[bytes]:
    return {chunk_id for _, chunk_id in _trashed_chunks(store, batch) if chunk_id}


def _clean_tmp(store: LocalStore, result: GcResult) -> None:
    """``tmp/`` files of dead backups: every one when no writer runs, else those older than
    a day. A writer that starts after the look writes files newer than it. A backup killed
    before its chunks were synced leaves most of them here: they count in what gc frees."""
    writers = leases.live_leases(store.leases_dir, ("writer",))
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        for path in store.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                age = now - st.st_mtime
                if (not writers and age > 0) or age > TMP_MAX_AGE:
                    path.unlink()
                    result.tmp_files += 1
                    result.freed_bytes += st.st_size


def _clean_orphans(repo: Repository, result: GcResult) -> None:
    """Index groups of backups that never committed (``tmp/`` is cleaned at gc's start)."""
    committed = set(repo.snapshot_ids())
    running = leases.live_leases(repo.local_store.leases_dir)
    now = time.time()
    for group in list(repo.store.groups(Kind.INDEXES)):
        snapshot_id = group.name.key
        if snapshot_id in committed:
            continue
        if running and now - group.mtime < STALE_INDEX_AGE:
            continue  # a running backup's, or a forgotten snapshot a restore still reads
        repo.store.delete_group(Kind.INDEXES, snapshot_id)
        result.orphan_indexes += 1
