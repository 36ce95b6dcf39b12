"""``copy``: snapshots into a mirror of the repository, ciphertext as it is (kopia sync-to).

The target is the same repository in another place: the same config and key slots, copied
byte for byte, so the same passphrase opens it and nothing is decrypted or re-encrypted.
Copying needs the key all the same: the manifests are encrypted, and the selectors (a time,
``latest``) and the list of a snapshot's indexes come from them; each index is
authenticated against its manifest before a chunk it names is sent.

Write order on the target, one snapshot at a time (oldest first, so an incremental's
chunks are mostly there already): the chunks it lacks (the target's chunks are listed once
per copy), made durable (a local target's syncfs, an object store's pack: one pack is
written and durable before the next is started, so a killed copy re-sends at most one
pack), then its indexes, then its manifest: the commit point. A copy killed or stopped at
its window's end lists nothing on the target that cannot be restored, and the next copy
reuses every chunk that made it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from imaging.errors import HourglassError, IntegrityError, UsageError
from imaging.jobs.common import Clock, Say, choose_snapshot, no_say, now, wait_for_window
from imaging.progress import Meter, ProgressCallback, no_progress
from imaging.repository import codec, keys, storage
from imaging.repository.records import ChunkIndex
from imaging.repository.storage import Kind, Store
from imaging.repository.store import LAYOUT, Repository, Snapshot, SnapshotList, load_config
from imaging.repository.throttle import Window

__all__ = ["CopyRequest", "CopyResult", "copy"]

# Chunks read from the source at once, and read ahead of the one being written (at most
# READ_AHEAD chunks of up to 4 MiB in memory).
READERS = 8
READ_AHEAD = 16


@dataclass(frozen=True)
class CopyRequest:
    """Copy ``snapshots`` (selectors, as other commands take them; none: all) that
    ``target`` lacks; ``window``: work only inside it (wait for it to open, stop cleanly
    when it closes)."""

    target: Store
    snapshots: tuple[str, ...] = ()
    source: str | None = None
    """Only snapshots of this source (as ``--source`` of other commands)."""
    window: Window | None = None
    ids: tuple[str, ...] = ()
    """Only the snapshots of these full ids, journal segments too (selectors never name a
    segment); ids the source no longer has are left out."""


@dataclass
class CopyResult:
    """What a copy did. ``complete`` is False when the window closed with work left:
    ``remaining`` names the snapshots not copied yet (running again resumes)."""

    source: str
    target: str
    created: bool = False
    copied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)
    chunks_sent: int = 0
    bytes_sent: int = 0
    """Chunk, index and manifest bytes written to the target."""
    chunk_bytes: int = 0
    elapsed: float = 0.0
    waited: float = 0.0
    """Seconds spent waiting for the window to open (not in ``elapsed``)."""
    complete: bool = True
    stopped_at: datetime | None = None
    damaged: list[str] = field(default_factory=list)
    """Snapshots of the source whose manifest cannot be read: not copied (their
    descriptions); a front end must not call such a copy a success."""

    @property
    def rate(self) -> float:
        return self.bytes_sent / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "target": self.target,
            "created": self.created,
            "complete": self.complete,
            "copied": self.copied,
            "already": self.already,
            "remaining": self.remaining,
            "chunks_sent": self.chunks_sent,
            "bytes_sent": self.bytes_sent,
            "chunk_bytes": self.chunk_bytes,
            "elapsed": round(self.elapsed, 3),
            "rate": round(self.rate, 1),
            "waited": round(self.waited, 3),
            "stopped_at": self.stopped_at.isoformat() if self.stopped_at else None,
            "damaged": self.damaged,
        }


class _WindowClosed(Exception):
    """The window closed: stop after what is durable."""


def copy(
    repo: Repository,
    request: CopyRequest,
    *,
    progress: ProgressCallback = no_progress,
    say: Say = no_say,
    clock: Clock = now,
    stop: threading.Event | None = None,
) -> CopyResult:
    """Copy snapshots into the mirror ``request.target`` (module docstring), under a reader
    lease on ``repo`` and a writer lease on the target; creates the mirror when missing.
    ``stop`` set: stop as at the window's end. A caller with a ``stop`` waits for the
    window itself: outside it, this returns at once, incomplete."""
    target_store = request.target
    result = CopyResult(source=repo.location, target=target_store.describe())
    window = request.window
    if window is not None and not window.contains(clock()) and stop is not None:
        result.complete = False
        result.stopped_at = clock()
        return result
    if window is not None and not window.contains(clock()):
        # Wait before taking any lease (a reader lease held all day would hold gc back),
        # and only when there is something to copy.
        listed = repo.snapshots()
        present = _present(repo, target_store)
        if any(s.id not in present for s in _select(repo, listed, request)):
            result.waited = wait_for_window(window, say=say, clock=clock)
    with repo.reader():
        listed = repo.snapshots()
        wanted = _select(repo, listed, request)
        if not request.snapshots and not request.ids:
            result.damaged = [d.describe() for d in listed.damaged]
        target, result.created = _mirror(repo, target_store)
        with target.writer():
            present = set(target.snapshot_ids())
            result.already = [s.id for s in wanted if s.id in present]
            todo = [s for s in wanted if s.id not in present]
            if not todo:
                return result
            started = time.monotonic()
            try:
                _copy_snapshots(repo, target, todo, request.window, clock, progress, result, stop)
            finally:
                result.elapsed = time.monotonic() - started
    return result


def _select(repo: Repository, listed: SnapshotList, request: CopyRequest) -> list[Snapshot]:
    """The snapshots ``request`` names (all, or of its source), oldest first."""
    source = request.source
    if request.ids:
        ids = set(request.ids)
        return [s for s in listed if s.id in ids]
    if not request.snapshots:
        return [s for s in listed if not source or source in (s.source, s.source_id)]
    chosen: dict[str, Snapshot] = {}
    for selector in request.snapshots:
        snapshot = choose_snapshot(repo, selector, source=source, listed=listed).snapshot
        chosen[snapshot.id] = snapshot
    return sorted(chosen.values(), key=lambda s: s.order)


def _present(repo: Repository, store: Store) -> set[str]:
    """The snapshots a target has (none when it is missing); another repository is refused
    here already."""
    if not store.reachable() or not store.exists(storage.CONFIG):
        return set()
    _refuse_other(repo, store, load_config(store)[0])
    return {info.name.key for info in store.list(Kind.SNAPSHOTS)}


def _refuse_other(repo: Repository, store: Store, config: dict[str, object]) -> None:
    if config["id"] != repo.id:
        raise UsageError(
            f"{store.describe()} is another repository (id {config['id']}), not a copy of "
            f"{repo.location} (id {repo.id}).",
            "copy only fills mirrors of the same repository: choose an empty or new "
            "location, or the mirror made by an earlier copy.",
        )


def _mirror(repo: Repository, store: Store) -> tuple[Repository, bool]:
    """The target opened with the source's key, created first when it holds nothing: key
    slots, then the config (which makes it a repository), each byte for byte."""
    created = False
    if not store.reachable() or not store.exists(storage.CONFIG):
        _create_mirror(repo, store)
        created = True
    _refuse_other(repo, store, load_config(store)[0])
    # Key slots added to the source since: the same passphrases open both.
    for info in list(repo.store.list(Kind.KEYS)) if repo.encrypted else []:
        if not store.exists(info.name):
            store.put(info.name, repo.store.get(info.name), if_absent=True)
    target = Repository.open_with_master(store, repo.keys.master)
    if target.config_hash != repo.config_hash:
        raise UsageError(
            f"The config of {store.describe()} differs from that of {repo.location}, though "
            f"both are repository {repo.id}: one was altered.",
            "Compare the two config files; copy refuses to fill a mirror it cannot trust.",
        )
    return target, created


def _create_mirror(repo: Repository, store: Store) -> None:
    root = store.local_path
    if root is not None and root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(
            f"{root} exists and is not an empty directory, nor a repository.",
            "copy makes the mirror in a missing or empty directory.",
        )
    raw_config = repo.store.get(storage.CONFIG)
    if keys.config_digest(raw_config) != repo.config_hash:
        raise HourglassError(
            f"The config of {repo.location} changed since it was opened.", "Run copy again."
        )
    store.create(LAYOUT + ((Kind.KEYS,) if repo.encrypted else ()))
    if repo.encrypted:
        for info in repo.store.list(Kind.KEYS):
            store.put(info.name, repo.store.get(info.name))
    store.put(storage.CONFIG, raw_config)


def _read_index(repo: Repository, snapshot: Snapshot, image: str) -> bytes:
    """The index file as stored, authenticated against the manifest."""
    name = storage.index(snapshot.id, image)
    what = f"index of snapshot {snapshot.id[:12]} image {image}"
    try:
        data = repo.store.get(name)
    except FileNotFoundError:
        raise IntegrityError(f"The {what} is missing ({repo.store.describe(name)}).") from None
    if repo.keys.mac(data).hex() != snapshot.image(image).index_mac:
        raise IntegrityError(f"The {what} is damaged or altered (checksum mismatch).")
    codec.decode_index(data, name=what)
    return data


def _read_ahead(repo: Repository, ids: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """The stored bytes of each chunk, in order, READERS read at once: from an object
    store each is a request, and one at a time the round trips would bound the copy."""
    with ThreadPoolExecutor(READERS, thread_name_prefix="copy-read") as pool:
        pending: deque[tuple[bytes, Future[bytes]]] = deque()
        try:
            for chunk_id in ids:
                pending.append((chunk_id, pool.submit(repo.read_chunk_file, chunk_id)))
                if len(pending) >= READ_AHEAD:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:  # stopped early (the window, an error): the reads not taken are dropped
            for _, future in pending:
                future.cancel()


def _copy_snapshots(
    repo: Repository,
    target: Repository,
    todo: list[Snapshot],
    window: Window | None,
    clock: Clock,
    progress: ProgressCallback,
    result: CopyResult,
    stop: threading.Event | None = None,
) -> None:
    store = target.store
    closes = window.closes(clock()) if window is not None else None

    def ended() -> bool:
        return (closes is not None and clock() >= closes) or (stop is not None and stop.is_set())

    have = {bytes.fromhex(info.name.key) for info in store.list(Kind.CHUNKS)}
    # What each snapshot needs sent, counted first for the progress total. The indexes are
    # read again when they are written: held for every snapshot, a 2 TiB disk's would take
    # 64 MiB each.
    plans: list[tuple[Snapshot, list[bytes]]] = []
    total = 0
    for snapshot in todo:
        send: list[bytes] = []
        for image in snapshot.images:
            data = _read_index(repo, snapshot, image.name)
            total += len(data)
            for chunk_id in ChunkIndex(codec.decode_index(data)[2]):
                if chunk_id in codec.RESERVED_IDS or chunk_id in have:
                    continue
                have.add(chunk_id)  # sent with this snapshot: not again with a later one
                send.append(chunk_id)
        total += sum(repo.store.size(storage.chunk(i)) for i in send)
        plans.append((snapshot, send))
    meter = Meter("copy", total, progress)
    try:
        for number, (snapshot, send) in enumerate(plans):
            meter.set_item(snapshot.id[:12])
            try:
                if stop is not None and stop.is_set():
                    raise _WindowClosed
                for chunk_id, data in _read_ahead(repo, send):
                    if ended():
                        raise _WindowClosed
                    if store.put_chunk(chunk_id, data):
                        result.chunks_sent += 1
                        result.chunk_bytes += len(data)
                        result.bytes_sent += len(data)
                    meter.add(len(data))
            except _WindowClosed:
                store.flush_chunks()  # what was sent is durable and reused next time
                store.sync_chunks()
                result.complete = False
                result.stopped_at = clock()
                result.remaining = [s.id for s, _ in plans[number:]]
                return
            store.flush_chunks()
            store.sync_chunks()
            for image in snapshot.images:
                data = _read_index(repo, snapshot, image.name)
                store.put(storage.index(snapshot.id, image.name), data)
                result.bytes_sent += len(data)
                meter.add(len(data))
            manifest = repo.store.get(storage.snapshot(snapshot.id))
            codec.decode_manifest(manifest, repo.keys, repo.id, snapshot.id)  # as listed
            store.put(storage.snapshot(snapshot.id), manifest, if_absent=True)
            result.bytes_sent += len(manifest)
            result.copied.append(snapshot.id)
    except BaseException:
        store.discard_chunks()
        raise
    finally:
        meter.finish()
