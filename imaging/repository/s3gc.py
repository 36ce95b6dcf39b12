"""Garbage collection on an object store: packs (docs/FORMAT.md, "Garbage collection on an
object store").

Chunks live in immutable packs, so gc works pack by pack. After a mark (every chunk a
committed snapshot references), a pack none of whose chunks is live is **superseded**
whole; a pack with more than :data:`REPACK_DEAD` of its bytes dead has its live chunks
written into new packs first (with their indexes), and is then superseded too.

Superseding is the object-store form of the local store's trash: the pack's index moves to
``trash/<batch>/<pack>.idx`` (put there, then deleted from ``packs/``), so a process that
opens the repository afterwards never finds a chunk in it, while one that read the index
before can still read the pack, which stays where it was. The batch is sealed with the
names of the leases alive then (``trash/<batch>/sealed.json``), and its packs are deleted
under the same two rules as a local trash batch (imaging/repository/gc.py): every sealing
lease has ended, and no live writer trusts a parent the fresh mark does not see. Just
before deleting, a fresh mark puts back the index of any superseded pack holding a chunk
that a snapshot committed since needs and that no current pack holds.

This relies on a process taking its lease before its first chunk operation (which loads
the chunk map); backups, restores, mounts and verify all do.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable

import blake3

from imaging.repository import gc as local_gc
from imaging.repository import leases
from imaging.repository.s3store import PACK_BYTES, S3Store, decode_pack_index
from imaging.repository.storage import Kind
from imaging.repository.store import Repository

REPACK_DEAD = 0.5
"""A pack with more than this share of its bytes unreferenced is rewritten (its live chunks
into new packs); one with less is kept as it is until more of it dies. Rewriting costs a
GET of the pack and PUTs of its live bytes: at one half, gc never writes more than it frees."""

_SEAL_KEY = "sealed.json"


def collect(repo: Repository) -> local_gc.GcResult:
    """One garbage collection of an object-store repository (module docstring)."""
    store = repo.store
    assert isinstance(store, S3Store)
    result = local_gc.GcResult()
    with store.gc_lease() as held:
        _purge(repo, store, result)
        live = local_gc.mark(repo, result)
        result.referenced = len(live)
        batch = f"{held.started:.6f}-{os.getpid()}"
        superseded = _select_and_repack(store, live, result)
        if superseded:
            _supersede(store, batch, superseded)
            _seal(store, batch)
        _clean_unindexed_packs(store)
        _purge(repo, store, result)
        _clean_orphans(repo, store, result)
    return result


# --- choosing packs -----------------------------------------------------------------------


def _select_and_repack(store: S3Store, live: set[bytes], result: local_gc.GcResult) -> list[str]:
    """The packs to supersede; the live chunks of those mostly dead are written anew first."""
    indexes = store.pack_indexes()
    writers = store.live_leases(("writer",))
    # A pack newer than the oldest running backup may be one of its packs, not committed
    # yet: left for a later gc (the rules would keep it safe anyway; this saves the work).
    cutoff = min(w.started for w in writers) - local_gc.SKEW_MARGIN if writers else float("inf")
    # A chunk in several packs (two backups at once, an interrupted gc) is live in one: the
    # first by name. The others count it dead.
    holder: dict[bytes, str] = {}
    for pack in sorted(indexes):
        entries = indexes[pack][1]
        for chunk_id, _, _, _ in entries or ():
            if chunk_id in live:
                holder.setdefault(chunk_id, pack)
    superseded: list[str] = []
    repack: list[str] = []
    for pack in sorted(indexes):
        mtime, entries = indexes[pack]
        if entries is None or mtime >= cutoff:
            continue  # a damaged index (verify names it) or a running backup's pack
        total = sum(length for _, _, length, _ in entries)
        kept = sum(length for i, _, length, _ in entries if holder.get(i) == pack)
        if kept == 0:
            superseded.append(pack)
        elif total - kept > REPACK_DEAD * total:
            repack.append(pack)
    superseded += _repack(store, repack, {p: indexes[p][1] or [] for p in repack}, holder, result)
    return superseded


def _repack(
    store: S3Store,
    packs: Iterable[str],
    entries: dict[str, list[tuple[bytes, int, int, bytes]]],
    holder: dict[bytes, str],
    result: local_gc.GcResult,
) -> list[str]:
    """Write the live chunks of ``packs`` into new packs; returns the packs whose chunks are
    all written again (a pack whose bytes do not match its index is left alone: verify
    reports it, and copying it would only spread the damage)."""
    done: list[str] = []
    batch: list[tuple[bytes, bytes]] = []
    size = 0
    waiting: list[str] = []
    for pack in packs:
        data = store.get_pack(pack)
        if blake3.blake3(data).hexdigest() != pack:
            continue
        chunks = []
        for chunk_id, offset, length, digest in entries[pack]:
            if holder.get(chunk_id) != pack:
                continue
            body = data[offset : offset + length]
            if blake3.blake3(body).digest() != digest:
                break
            chunks.append((chunk_id, body))
        else:
            batch += chunks
            size += sum(len(b) for _, b in chunks)
            waiting.append(pack)
            result.repacked_packs += 1
            result.rewritten_bytes += sum(len(b) for _, b in chunks)
        if size >= PACK_BYTES:
            store.write_pack(batch)
            done += waiting
            batch, size, waiting = [], 0, []
    if batch:
        store.write_pack(batch)
    return done + waiting


def _supersede(store: S3Store, batch: str, packs: list[str]) -> None:
    """Move each pack's index into the batch: new openers no longer see its chunks."""
    for pack in packs:
        index = store.get_pack_index(pack)
        store.raw_put(f"trash/{batch}/{pack}.idx", index)
        store.raw_delete(f"packs/{pack}.idx")


def _seal(store: S3Store, batch: str) -> None:
    names = sorted(lease.name for lease in store.live_leases())
    store.raw_put(f"trash/{batch}/{_SEAL_KEY}", json.dumps({"leases": names}).encode())


# --- deleting -----------------------------------------------------------------------------


def _batches(store: S3Store) -> dict[str, list[str]]:
    """Trash batch -> the packs superseded in it."""
    found: dict[str, list[str]] = {}
    for key, _, _ in store.raw_objects("trash/"):
        _, batch, name = key.split("/", 2)
        packs = found.setdefault(batch, [])
        if name.endswith(".idx"):
            packs.append(name.removesuffix(".idx"))
    return found


def _sealed_by(store: S3Store, batch: str, alive: list[leases.Lease]) -> set[str]:
    try:
        return set(json.loads(store.raw_get(f"trash/{batch}/{_SEAL_KEY}"))["leases"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        # A gc that died before sealing: seal it now (later is always safe).
        _seal(store, batch)
        return {lease.name for lease in alive}


def _purge(repo: Repository, store: S3Store, result: local_gc.GcResult) -> None:
    batches = _batches(store)
    if not batches:
        return
    alive = store.live_leases()
    found = local_gc.ready_to_empty(
        repo,
        sorted(batches),
        alive,
        lambda batch: _sealed_by(store, batch, alive),
        store.live_leases,
        result,
    )
    if found is None:
        return
    ready, fresh = found
    held = {
        chunk_id
        for _, entries in store.pack_indexes().values()
        for chunk_id, _, _, _ in entries or ()
    }
    sizes = {key: size for key, size, _ in store.raw_objects("packs/")}
    for batch in ready:
        for pack in batches[batch]:
            _empty_pack(store, batch, pack, fresh.live, held, sizes, result)
        with contextlib.suppress(FileNotFoundError):
            store.raw_delete(f"trash/{batch}/{_SEAL_KEY}")


def _empty_pack(
    store: S3Store,
    batch: str,
    pack: str,
    live: set[bytes],
    held: set[bytes],
    sizes: dict[str, int],
    result: local_gc.GcResult,
) -> None:
    """Delete a superseded pack, or put its index back if a chunk only it holds is needed."""
    trashed = f"trash/{batch}/{pack}.idx"
    try:
        index = store.raw_get(trashed)
    except FileNotFoundError:
        return
    try:
        entries = decode_pack_index(index, pack)[1]
        needed = [i for i, _, _, _ in entries if i in live and i not in held]
    except ValueError:
        entries, needed = [], [b""]  # cannot tell: keep it
    if needed and f"packs/{pack}" in sizes:
        store.raw_put(f"packs/{pack}.idx", index)
        held.update(i for i, _, _, _ in entries)
        result.restored += len(needed)
    elif f"packs/{pack}" in sizes:
        with contextlib.suppress(FileNotFoundError):
            store.raw_delete(f"packs/{pack}")
        result.freed += len(entries)
        result.freed_bytes += sizes[f"packs/{pack}"]
        result.deleted_packs += 1
    store.raw_delete(trashed)


def _clean_unindexed_packs(store: S3Store) -> None:
    """Packs without an index (a backup killed between the two PUTs, or the store killed
    under it): never read. Listed first, then the leases: with no writer live then, a
    listed pack is a dead backup's unless its index appeared meanwhile (a backup that ended
    since wrote it before its end), so each is deleted after a last look at its index and its
    date. With a writer live, only those a day old go."""
    indexed, trashed = set(), set()
    packs: dict[str, float] = {}
    for key, _, mtime in store.raw_objects("packs/"):
        name = key.removeprefix("packs/")
        if name.endswith(".idx"):
            indexed.add(name.removesuffix(".idx"))
        else:
            packs[name] = mtime
    for key, _, _ in store.raw_objects("trash/"):
        trashed.add(key.rsplit("/", 1)[-1].removesuffix(".idx"))
    candidates = {p: m for p, m in packs.items() if p not in indexed and p not in trashed}
    if not candidates:
        return
    writers = store.live_leases(("writer",))
    now = time.time()
    for pack, mtime in candidates.items():
        if writers and now - mtime < local_gc.TMP_MAX_AGE:
            continue
        if store.raw_stat(f"packs/{pack}.idx") is not None:
            continue
        again = store.raw_stat(f"packs/{pack}")
        if again is None or abs(again - mtime) >= 1.0:  # HEAD dates have whole seconds
            continue  # gone, or written again since the listing: a new backup's
        with contextlib.suppress(FileNotFoundError):
            store.raw_delete(f"packs/{pack}")


def _clean_orphans(repo: Repository, store: S3Store, result: local_gc.GcResult) -> None:
    """Index groups of backups that never committed (as on a local store)."""
    committed = set(repo.snapshot_ids())
    running = store.live_leases()
    for group in list(store.groups(Kind.INDEXES)):
        snapshot_id = group.name.key
        if snapshot_id in committed:
            continue
        if running:
            continue  # a running backup's, or a forgotten snapshot a restore still reads
        store.delete_group(Kind.INDEXES, snapshot_id)
        result.orphan_indexes += 1
