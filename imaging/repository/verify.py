"""Verify: every manifest, index and chunk a snapshot needs is there and intact.

By default the structure is checked (manifests authenticate, indexes match their manifests,
every referenced chunk file exists). With ``read_data`` every referenced chunk is read,
authenticated, decompressed and re-hashed, in ascending id order; with a time budget the run
stops when the time is up and the next run continues after the last chunk it checked.
Damage is reported as the snapshots, images and byte ranges it breaks.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from imaging.errors import HourglassError, LocationLost
from imaging.progress import Meter, ProgressCallback, no_progress
from imaging.repository import codec, storage
from imaging.repository.records import ChunkIndex, ImageRecord
from imaging.repository.storage import Kind, Name, Store
from imaging.repository.store import Location, Repository, Snapshot, as_store, read_config
from imaging.units import count, human_size, local_now

T = TypeVar("T")


@dataclass
class Damage:
    """One damaged thing and what it breaks."""

    what: str
    reason: str
    affects: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"{self.what}: {self.reason}"
        if self.affects:
            shown = self.affects[:8]
            more = f" and {len(self.affects) - 8} more" if len(self.affects) > 8 else ""
            text += "\n    breaks " + "\n    breaks ".join(shown) + more
        return text


@dataclass
class VerifyReport:
    snapshots: int = 0
    chunks: int = 0
    checked: int = 0
    checked_bytes: int = 0
    data_read: bool = False
    """The chunks' bytes were read (``read_data``, keyless): ``checked_bytes`` says how many;
    else each chunk was only found in place, with a plausible size."""
    complete: bool = True
    resumed: bool = False
    damage: list[Damage] = field(default_factory=list)
    # What a person should know about the choice of snapshot (a damaged manifest that may be
    # newer than the one ``latest`` or a time chose: jobs.common.Chosen).
    warnings: list[str] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)
    """Members of a set that lacked or held damaged objects the check read around (the
    repository is intact, less redundant: `hourglass check --repair`)."""

    @property
    def ok(self) -> bool:
        return not self.damage


def _ranges(
    ids: ChunkIndex, wanted: set[bytes], block_size: int, size: int
) -> Iterator[tuple[bytes, int, int]]:
    for block, chunk_id in enumerate(ids):
        if chunk_id in wanted:
            start = block * block_size
            yield chunk_id, start, min(block_size, size - start)


def _describe(snapshot: Snapshot, image: ImageRecord, start: int, length: int) -> str:
    return (
        f"snapshot {snapshot.id[:12]} ({snapshot.time.strftime('%Y-%m-%d %H:%M:%S')}, "
        f"{snapshot.source}) image {image.name} bytes {start}-{start + length - 1}"
    )


def verify(
    repo: Repository,
    selected: list[Snapshot] | None = None,
    *,
    read_data: bool = False,
    max_time: float | None = None,
    scope: str = "*",
    progress: ProgressCallback = no_progress,
    confirmed: Set[bytes] = frozenset(),
) -> VerifyReport:
    """Check ``selected`` snapshots (all when None); see the module docstring.

    ``confirmed``: chunks a structure check need not look up again, as an
    :class:`EarlyCheck` found them stored (ignored with ``read_data``).
    """
    report = VerifyReport()
    snapshots = selected
    if snapshots is None:
        snapshots = repo.snapshots(
            on_damage=lambda sid, e: report.damage.append(
                Damage(
                    f"snapshot {sid}",
                    e.message.removeprefix(f"snapshot {sid}: "),  # the name is said once
                    [f"snapshot {sid} (all of it)"],
                )
            )
        )
    report.snapshots = len(snapshots)
    # Which chunk ids are referenced, and the indexes needed to map damage back to snapshots.
    indexes: list[tuple[Snapshot, ImageRecord, ChunkIndex]] = []
    referenced: set[bytes] = set()
    for snapshot in snapshots:
        for image in snapshot.images:
            try:
                ids = repo.load_index(snapshot, image.name)
            except LocationLost:
                raise  # the drive went: nothing is known to be damaged
            except HourglassError as e:
                report.damage.append(
                    Damage(
                        f"index {snapshot.id[:12]}/{image.name}",
                        e.message,
                        [_describe(snapshot, image, 0, image.size)],
                    )
                )
                continue
            indexes.append((snapshot, image, ids))
            referenced.update(ids)
    referenced.discard(codec.ZERO_ID)
    referenced.discard(codec.UNUSED_ID)
    report.chunks = len(referenced)

    bad: dict[bytes, str] = {}
    if read_data:
        report.data_read = True
        _read_data(repo, sorted(referenced), report, bad, max_time, scope, progress)
    else:
        meter = Meter("verify", len(referenced), progress)
        todo = [c for c in referenced if c not in confirmed] if confirmed else referenced
        report.checked += len(referenced) - len(todo)
        meter.add(len(referenced) - len(todo))
        # One lookup per chunk, several at once: on a cold cache each is a directory read,
        # and the drive answers many as fast as one.
        with ThreadPoolExecutor(STAT_WORKERS, thread_name_prefix="verify") as pool:
            for chunk_id, problem in _batched(
                pool, lambda chunk_id: (chunk_id, _stored(repo, chunk_id)), todo
            ):
                if problem is not None:
                    bad[chunk_id] = problem
                report.checked += 1
                meter.add(1)
        meter.finish()

    if bad:
        wanted = set(bad)
        affects: dict[bytes, list[str]] = {chunk_id: [] for chunk_id in bad}
        for snapshot, image, ids in indexes:
            for chunk_id, start, length in _ranges(ids, wanted, repo.block_size, image.size):
                affects[chunk_id].append(_describe(snapshot, image, start, length))
        for chunk_id, reason in sorted(bad.items()):
            report.damage.append(Damage(f"chunk {chunk_id.hex()}", reason, affects[chunk_id]))
    return report


STAT_WORKERS = 16  # lookups in flight in a structure check
LOOKUP_BATCH = 4096  # lookups handed to the threads at a time


def _batched(
    pool: ThreadPoolExecutor, fn: Callable[[bytes], T], items: Iterable[bytes]
) -> Iterator[T]:
    """``pool.map(fn, items)`` in batches: the executor makes a future per item it is
    given at once, and a large disk has millions of chunks."""
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) == LOOKUP_BATCH:
            yield from pool.map(fn, batch)
            batch = []
    if batch:
        yield from pool.map(fn, batch)


class EarlyCheck:
    """The lookups of a post-backup structure check, made while the backup still runs.

    An incremental backup reuses most of its parent's chunks without looking them up; the
    structure check after it then stats each of them, on a cold cache about a tenth of the
    backup's time. Looked up here, in the background, while the backup reads the disk, they
    cost nothing on the clock. The backup holds its writer lease all the while, so no gc
    removes a chunk between its lookup here and the commit. :func:`verify` gets
    :attr:`confirmed` and looks up only the rest (the chunks the backup wrote among them).
    """

    def __init__(self) -> None:
        self._found: set[bytes] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def look_up(self, repo: Repository, ids: Iterable[bytes]) -> None:
        """Start looking up ``ids`` (duplicates and the zero and unused ids are skipped)."""
        wanted = set(ids) - {codec.ZERO_ID, codec.UNUSED_ID}
        thread = threading.Thread(
            target=self._run, args=(repo, wanted), name="early-check", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _run(self, repo: Repository, wanted: set[bytes]) -> None:
        def one(chunk_id: bytes) -> bytes | None:
            if self._stop.is_set():
                return None
            try:
                return chunk_id if _stored(repo, chunk_id) is None else None
            except Exception:  # any failure: the check after the backup looks again
                return None  # and says what is wrong

        with ThreadPoolExecutor(STAT_WORKERS, thread_name_prefix="early-check") as pool:
            for chunk_id in _batched(pool, one, wanted):
                if chunk_id is not None:
                    with self._lock:
                        self._found.add(chunk_id)

    def finish(self) -> None:
        """Wait for the lookups (called while the writer lease is still held)."""
        for thread in self._threads:
            thread.join()

    def cancel(self) -> None:
        self._stop.set()
        self.finish()

    @property
    def confirmed(self) -> Set[bytes]:
        """Chunks found stored (waits for the lookups; not copied: a set of every chunk of
        a large disk is hundreds of MB)."""
        self.finish()
        return self._found


def _stored(repo: Repository, chunk_id: bytes) -> str | None:
    """None if the chunk is stored whole enough to be read; else what is wrong with it."""
    try:
        size = repo.store.size(storage.chunk(chunk_id))
    except FileNotFoundError:
        try:
            repo.read_chunk_file(chunk_id)  # also looks in trash
        except LocationLost:
            raise
        except HourglassError:
            return "missing"
        return None
    if size < codec.CHUNK_HEADER.size + codec.TRAILER_SIZE:
        return f"truncated ({size} bytes)"
    return None


def _load_state(repo: Repository, scope: str) -> bytes | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        state = json.loads(repo.store.get(storage.VERIFY_STATE))
        if state["scope"] == scope:
            return bytes.fromhex(state["cursor"])
    return None


def _save_state(repo: Repository, scope: str, cursor: bytes | None) -> None:
    if cursor is None:
        repo.store.delete(storage.VERIFY_STATE, durable=False)
        return
    state = {"scope": scope, "cursor": cursor.hex(), "saved": local_now().isoformat()}
    repo.store.put(storage.VERIFY_STATE, json.dumps(state).encode())


def _check_chunk(repo: Repository, chunk_id: bytes) -> tuple[int, str | None]:
    try:
        data = repo.read_chunk_file(chunk_id)
    except LocationLost:
        raise
    except HourglassError as e:
        return 0, "missing" if "missing" in e.message else e.message
    try:
        plaintext = codec.decode_chunk(chunk_id, data, repo.keys)
    except HourglassError as e:
        return len(data), e.message.replace(f"chunk {chunk_id.hex()} ", "")
    return len(plaintext), None


def _read_data(
    repo: Repository,
    ordered: list[bytes],
    report: VerifyReport,
    bad: dict[bytes, str],
    max_time: float | None,
    scope: str,
    progress: ProgressCallback,
) -> None:
    cursor = _load_state(repo, scope) if max_time is not None else None
    if cursor is not None:
        report.resumed = True
        ordered = [c for c in ordered if c > cursor]
    deadline = time.monotonic() + max_time if max_time is not None else None
    meter = Meter("verify", len(ordered), progress)
    last: bytes | None = None
    workers = max(2, os.cpu_count() or 2)
    with ThreadPoolExecutor(workers, thread_name_prefix="verify") as pool:
        window: list[tuple[bytes, object]] = []
        position = 0
        while position < len(ordered) or window:
            while position < len(ordered) and len(window) < 2 * workers:
                # Always check at least one chunk, so a run with a tiny budget still progresses.
                started = report.checked + len(window) > 0
                if started and deadline is not None and time.monotonic() >= deadline:
                    break
                chunk_id = ordered[position]
                window.append((chunk_id, pool.submit(_check_chunk, repo, chunk_id)))
                position += 1
            if not window:
                break
            chunk_id, future = window.pop(0)
            size, problem = future.result()  # type: ignore[attr-defined]
            if problem is not None:
                bad[chunk_id] = problem
            report.checked += 1
            report.checked_bytes += size
            last = chunk_id
            meter.add(1)
        if position < len(ordered):
            report.complete = False
    meter.finish()
    if max_time is not None:
        _save_state(repo, scope, last if not report.complete else None)


def summary_line(report: VerifyReport) -> str:
    """``2 snapshots, 40 of 40 chunks (40.0 MB) read and checked``; without reading, how
    many chunks were found in place (no byte count: none was read, "(0 B) checked")."""
    if report.data_read:
        done = (
            f"{report.checked} of {report.chunks} chunks ({human_size(report.checked_bytes)}) "
            "read and checked"
        )
    else:
        done = f"{report.checked} of {report.chunks} chunks found in place (not read)"
    return f"{count(report.snapshots, 'snapshot')}, {done}"


def verify_keyless(path: Location, *, progress: ProgressCallback = no_progress) -> VerifyReport:
    """Check every stored file's plain checksum: bit rot is found without the passphrase
    (what it breaks cannot be named without the key: the manifests are encrypted)."""
    store = as_store(path)
    read_config(store)
    report = VerifyReport(data_read=True)
    snapshots = _names(store, Kind.SNAPSHOTS)
    names = snapshots + _names(store, Kind.INDEXES)
    check_packs = getattr(store, "check_packs", None)  # an object store: chunks in packs
    if check_packs is None:
        names += _names(store, Kind.CHUNKS)
    else:
        for what, problem, size in check_packs():
            report.checked += 1 if size else 0
            report.checked_bytes += size
            if problem is not None:
                report.damage.append(Damage(what, problem))
    meter = Meter("verify", len(names), progress)
    for name in sorted(names, key=storage.object_key):
        what = storage.object_key(name)
        try:
            data = store.get(name)
        except OSError as e:
            report.damage.append(Damage(what, f"unreadable: {e.strerror}"))
            continue
        report.checked += 1
        report.checked_bytes += len(data)
        if not codec.trailer_ok(data):
            report.damage.append(Damage(what, "its checksum does not match (bit rot)"))
        meter.add(1)
    meter.finish()
    report.snapshots = len(snapshots)
    report.chunks = report.checked
    return report


def _names(store: Store, kind: Kind) -> list[Name]:
    """Every object of ``kind`` (none when its directory is missing: the keyless check
    reports what there is)."""
    try:
        return [info.name for info in store.list(kind)]
    except FileNotFoundError:
        return []
