"""Backup: read a source's blocks, store the new ones, commit a snapshot.

This thread walks the source's blocks and hands each run of up to 4 MiB of blocks to read
(`READ_SPAN`) to a worker (one more than there are cores) with a buffer from a small pool;
the worker reads the run in one request, then hashes each block, checks for duplicates,
compresses, encrypts and writes the chunk. Reads, BLAKE3, zstd, AES-GCM and file I/O all
release the GIL, so both cores work and several reads are in flight at once (a disk or a
loop device delivers more with several requests queued, and more with 4 MiB requests than
with 1 MiB ones: bench/README.md). The bounded pool keeps memory flat whatever the source
size.

Write order (docs/FORMAT.md): chunks, then indexes, then the manifest as the commit point.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import queue
import socket
import stat
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imaging.disks.badfiles import files_hit
from imaging.errors import Cancelled, HourglassError, NoSpace, SourceError
from imaging.image.blockio import SourceFile, aligned_buffer, data_extents
from imaging.image.devices import device_size, is_block_device
from imaging.image.usedmap import FULL, UNUSED, UsedMap
from imaging.memory import keep_large_buffers
from imaging.progress import Meter, ProgressCallback, no_progress
from imaging.repository import codec
from imaging.repository.records import BackupStats, ChunkIndex, ImageRecord, Manifest
from imaging.repository.store import Repository, Snapshot
from imaging.repository.verify import EarlyCheck
from imaging.units import human_size, local_now

READ_SPAN = codec.MAX_BLOCK_SIZE  # bytes of consecutive blocks read in one request
RESCUE_PIECE = 64 * 1024
RESCUE_SECTOR = 4096


@dataclass
class ImageSource:
    """One contiguous byte range of a source, stored as one image of the snapshot."""

    name: str
    path: str
    offset: int
    size: int
    used: UsedMap | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.meta.get("method", "raw"))


@dataclass
class BackupPlan:
    """What one snapshot will hold; built by :func:`plan_file` or the disks layer."""

    source: str
    source_id: str
    kind: str
    size: int
    images: list[ImageSource]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class BackupOptions:
    rescue: bool = False
    workers: int = 0
    cancel: threading.Event | None = None
    early_check: EarlyCheck | None = None
    """Looks up the parent's chunks while the backup runs (see :class:`EarlyCheck`)."""


@dataclass
class _Stats:
    read: int = 0
    new_bytes: int = 0
    stored: int = 0
    new_chunks: int = 0
    dedup_bytes: int = 0
    zero_bytes: int = 0
    unused_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, elapsed: float) -> BackupStats:
        """The manifest's stats of a backup that took ``elapsed`` seconds."""
        return BackupStats(
            read=self.read,
            new_bytes=self.new_bytes,
            stored=self.stored,
            new_chunks=self.new_chunks,
            dedup_bytes=self.dedup_bytes,
            zero_bytes=self.zero_bytes,
            unused_bytes=self.unused_bytes,
            elapsed=elapsed,
        )


def _check_imageable(path: str, real: str) -> None:
    """Refuse what is not an image file or a block device, before opening it.

    A directory's lseek(SEEK_END) reports a huge size (the backup then fails with a
    MemoryError), a fifo blocks the open until a writer appears and a character device reads
    forever or reports 0 bytes: none of them is an image, so say what it is instead.
    """
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError as e:
        raise SourceError(f"The source {path} does not exist.") from e
    except OSError as e:
        raise SourceError(f"Cannot open the source {path}: {e.strerror}.") from e
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode):
        return
    what = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    raise SourceError(
        f"The source {path} is {what}, not a disk, a partition or an image file.",
        "Name a disk (/dev/sdX), a partition or an image file; to keep files, back up the "
        "partition that holds them.",
    )


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a pipe (fifo)",
    stat.S_IFCHR: "a character device",
    stat.S_IFSOCK: "a socket",
}


def plan_file(path: str) -> BackupPlan:
    """A plan that stores every non-zero block of an image file or block device, raw."""
    if not os.path.exists(path):
        raise SourceError(f"The source {path} does not exist.")
    real = os.path.realpath(path)
    _check_imageable(path, real)
    try:
        size = device_size(real)
    except OSError as e:
        raise SourceError(f"Cannot open the source {path}: {e.strerror}.") from e
    if size == 0:
        raise SourceError(f"The source {path} is empty.")
    block = is_block_device(real)
    kind = "partition" if block else "file"
    source_id = f"device:{real}" if block else f"file:{os.path.abspath(path)}"
    image = ImageSource(name="data", path=real, offset=0, size=size, meta={"method": "raw"})
    return BackupPlan(source=path, source_id=source_id, kind=kind, size=size, images=[image])


class _Pipeline:
    """Hash, dedup, compress, encrypt and write the blocks of one snapshot."""

    def __init__(
        self, repo: Repository, options: BackupOptions, meter: Meter, stats: _Stats
    ) -> None:
        self.repo = repo
        self.options = options
        self.meter = meter
        self.stats = stats
        keep_large_buffers()
        self.block_size = repo.block_size
        # One more worker than cores: a worker waiting for its read or its write leaves its
        # core to another.
        self.workers = options.workers or (os.cpu_count() or 1) + 1
        self.pool: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self.span = max(1, READ_SPAN // self.block_size)  # blocks per read
        for _ in range(self.workers * 2 + 1):
            self.pool.put(aligned_buffer(self.span * self.block_size))
        self.known: set[bytes] = set()
        self.in_flight: dict[bytes, threading.Event] = {}
        self.known_lock = threading.Lock()
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="backup")
        self.futures: list[Future[None]] = []
        self.failure: BaseException | None = None

    # -- worker side --------------------------------------------------------------------------

    def read_and_process(
        self,
        source: SourceFile,
        image: ImageSource,
        buf: mmap.mmap,
        first: int,
        count: int,
        ids: ChunkIndex,
        parent: ChunkIndex | None,
        bad: list[list[int]],
    ) -> None:
        """Read blocks ``first`` to ``first + count - 1`` in one request and store each."""
        bs = self.block_size
        start = first * bs
        length = min(count * bs, image.size - start)
        try:
            if self.failure is not None:
                return
            unreadable = self._read(source, image, buf, start, length)
            with self.stats.lock:
                self.stats.read += length
                bad.extend(unreadable)
            with memoryview(buf) as whole:
                for i in range(count):
                    with whole[i * bs : min((i + 1) * bs, length)] as view:
                        self._process(view, ids, parent, first + i)
        except BaseException as e:
            if self.failure is None:
                self.failure = e
            raise
        finally:
            self.pool.put(buf)

    def _process(
        self, view: memoryview, ids: ChunkIndex, parent: ChunkIndex | None, block: int
    ) -> None:
        length = len(view)
        if codec.is_zero(view):
            ids[block] = codec.ZERO_ID
            with self.stats.lock:
                self.stats.zero_bytes += length
            self.meter.add(length)
            return
        chunk_id = self.repo.keys.chunk_id(view)
        ids[block] = chunk_id
        # The parent snapshot's chunk for this very block is stored (see unchanged_from);
        # any other chunk is looked up.
        if (parent is not None and parent[block] == chunk_id) or not self._claim(chunk_id):
            with self.stats.lock:
                self.stats.dedup_bytes += length
            self.meter.add(length, dedup_bytes=length)
            return
        try:
            data = self.repo.encode_chunk(chunk_id, view)
            written = self.repo.write_chunk(chunk_id, data)
        finally:
            self._done(chunk_id)
        with self.stats.lock:
            if written:
                self.stats.new_bytes += length
                self.stats.stored += len(data)
                self.stats.new_chunks += 1
            else:
                self.stats.dedup_bytes += length
        self.meter.add(length, new_bytes=length if written else 0)

    def _claim(self, chunk_id: bytes) -> bool:
        """True if this worker must store the chunk; False if it is (being) stored already."""
        while True:
            with self.known_lock:
                if chunk_id in self.known:
                    return False
                waiting = self.in_flight.get(chunk_id)
                if waiting is None:
                    self.in_flight[chunk_id] = threading.Event()
                    break
            waiting.wait()
        if self.repo.has_chunk(chunk_id):
            self._done(chunk_id)
            return False
        return True

    def _done(self, chunk_id: bytes) -> None:
        with self.known_lock:
            self.known.add(chunk_id)
            event = self.in_flight.pop(chunk_id, None)
        if event is not None:
            event.set()

    # -- reader side --------------------------------------------------------------------------

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure
        if self.options.cancel is not None and self.options.cancel.is_set():
            raise Cancelled("The backup was cancelled. No snapshot was recorded.")

    def image(
        self, image: ImageSource, ids: ChunkIndex, parent: ChunkIndex | None = None
    ) -> list[list[int]]:
        """Read and submit every block of ``image``; returns the unreadable ranges.

        ``parent``: the parent snapshot's index of this image, whose chunks count as stored
        where they sit at the same block."""
        bad: list[list[int]] = []
        bs = self.block_size
        used = image.used.rescaled(bs) if image.used is not None else None
        try:
            source = SourceFile(image.path)
        except OSError as e:
            raise SourceError(f"Cannot open {image.path}: {e.strerror}.") from e
        run: list[int] = []  # [first block, count] of consecutive blocks to read

        def submit() -> None:
            if run:
                self.futures.append(
                    self.executor.submit(
                        self.read_and_process,
                        source,
                        image,
                        self._buffer(),
                        run[0],
                        run[1],
                        ids,
                        parent,
                        bad,
                    )
                )
                run.clear()
                if len(self.futures) > 4 * self.workers:
                    self._reap()

        try:
            with _sequential(source.fd, image.offset, image.size):
                count = -(-image.size // bs)
                holes = hole_map(image.path, image.offset, image.size, bs)
                for block in range(count):
                    self.check()
                    start = block * bs
                    length = min(bs, image.size - start)
                    state = used.state(block) if used is not None else FULL
                    if state != UNUSED and holes is not None and holes.state(block) == UNUSED:
                        submit()
                        ids[block] = codec.ZERO_ID  # a hole: all zeros
                        with self.stats.lock:
                            self.stats.zero_bytes += length
                        self.meter.add(length)
                        continue
                    if state == UNUSED:
                        submit()
                        ids[block] = codec.UNUSED_ID
                        with self.stats.lock:
                            self.stats.unused_bytes += length
                        self.meter.add(length)
                        continue
                    # A partly used block is stored as it is on the source, free bytes and
                    # all: zeroing them would change the block whenever a file near it is
                    # deleted or moved (measured: 9x the changed bytes in an incremental).
                    if run and run[1] == self.span:
                        submit()
                    if run:
                        run[1] += 1
                    else:
                        run.extend([block, 1])
                submit()
                self.finish()
        finally:
            wait(self.futures)  # no worker may still read from the source closed here
            source.close()
        bad.sort()
        return bad

    def _buffer(self) -> mmap.mmap:
        while True:
            self.check()
            try:
                return self.pool.get(timeout=0.2)
            except queue.Empty:
                continue

    def _reap(self) -> None:
        pending = []
        for f in self.futures:
            if f.done():
                f.result()
            else:
                pending.append(f)
        self.futures = pending

    def _read(
        self, source: SourceFile, image: ImageSource, buf: mmap.mmap, start: int, length: int
    ) -> list[list[int]]:
        """Fill ``buf`` with the blocks at ``start``; returns unreadable ranges (rescue only)."""
        with memoryview(buf) as view:
            try:
                source.read_into(view[:length], image.offset + start)
                return []
            except OSError as e:
                if e.errno != errno.EIO:
                    raise SourceError(f"Reading {image.path} failed: {e.strerror}.") from e
            bad = _rescue_read(source, view, image.offset + start, length, start)
            if not self.options.rescue:
                ranges = ", ".join(f"bytes {s}-{s + n - 1}" for s, n in bad or [[start, length]])
                raise SourceError(
                    f"Read errors on {image.path} ({image.name}): {ranges} cannot be read. "
                    "The backup stopped; no snapshot was recorded.",
                    "The source disk is failing. Run the backup with --rescue to store what can "
                    "be read, zeros for the rest, and a record of the unreadable ranges.",
                )
            return bad

    def finish(self) -> None:
        for f in self.futures:
            f.result()
        self.futures = []

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def hole_map(path: str, offset: int, size: int, block_size: int) -> UsedMap | None:
    """Where a sparse file holds data in ``[offset, offset+size)``, so blocks inside holes
    are never read (a 2 TiB sparse file is backed up in seconds). None for block devices."""
    if is_block_device(path):
        return None
    extents = data_extents(path)
    if extents is None:
        return None
    lo, hi = offset, offset + size
    inside = (
        (max(start, lo) - lo, min(start + length, hi) - max(start, lo))
        for start, length in extents
        if start < hi and start + length > lo
    )
    return UsedMap.from_ranges(size, block_size, inside)


def _rescue_read(
    source: SourceFile, view: memoryview, offset: int, length: int, rel: int
) -> list[list[int]]:
    """Read what can be read in small pieces; zero and report the rest (``rel``-relative)."""
    bad: list[list[int]] = []
    for piece in range(0, length, RESCUE_PIECE):
        piece_len = min(RESCUE_PIECE, length - piece)
        try:
            source.read_into(view[piece : piece + piece_len], offset + piece)
            continue
        except OSError:
            pass
        for sector in range(piece, piece + piece_len, RESCUE_SECTOR):
            sector_len = min(RESCUE_SECTOR, piece + piece_len - sector)
            try:
                source.read_into(view[sector : sector + sector_len], offset + sector)
            except OSError:
                view[sector : sector + sector_len] = bytes(sector_len)
                if bad and bad[-1][0] + bad[-1][1] == rel + sector:
                    bad[-1][1] += sector_len
                else:
                    bad.append([rel + sector, sector_len])
    return bad


class _sequential:
    """Tell the kernel we read ``[offset, offset+size)`` once, in order."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self.fd, self.offset, self.size = fd, offset, size

    def __enter__(self) -> None:
        with contextlib.suppress(OSError):
            os.posix_fadvise(self.fd, self.offset, self.size, os.POSIX_FADV_SEQUENTIAL)

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(OSError):
            os.posix_fadvise(self.fd, self.offset, self.size, os.POSIX_FADV_DONTNEED)


def unchanged_from(
    repo: Repository, parent: Snapshot | None, image: ImageSource
) -> ChunkIndex | None:
    """The parent snapshot's index of ``image``: its chunk for a block counts as stored when
    the block still has that content, so it needs no lookup.

    A snapshot in the repository holds the writer's promise that its chunks were written
    and synced before it was committed, so an unchanged block of the next backup is known
    without a stat of its chunk file: on a cold cache (a freshly booted appliance) those
    stats cost a third of an incremental backup's work. A chunk file lost since is not
    stored again by that backup; `hourglass verify` names it, as it names every missing
    chunk. Comparing by position costs one index in memory (64 MiB for 2 TiB at 1 MiB
    blocks), where a set of every chunk id would cost three times that. None when the parent
    has no such image or its index cannot be read (every chunk is looked up).
    """
    if parent is None:
        return None
    meta = next((m for m in parent.images if m.name == image.name), None)
    if meta is None or meta.size != image.size:
        return None
    try:
        return repo.load_index(parent, image.name)
    except HourglassError:
        return None


def keep_stored_chunks(repo: Repository, pipeline: _Pipeline) -> None:
    """A backup that stops without a snapshot still commits the chunks it wrote whole: the
    next backup finds them stored (a cancelled backup resumes where it was). If even that
    fails (the repository drive is gone), they are removed from ``tmp/``."""
    pipeline.close()
    try:
        repo.commit_chunks()
        repo.sync_chunk_dirs()
    except (HourglassError, OSError):
        repo.discard_chunks()


def latest_of_source(snapshots: list[Snapshot], source_id: str) -> Snapshot | None:
    same = [s for s in snapshots if s.source_id == source_id]
    return same[-1] if same else None


def run_backup(
    repo: Repository,
    plan: BackupPlan,
    *,
    progress: ProgressCallback = no_progress,
    options: BackupOptions | None = None,
) -> Snapshot:
    """Store ``plan`` as a new snapshot and return it. Nothing is committed on failure."""
    try:
        return _run_backup(repo, plan, progress, options)
    except NoSpace as e:
        raise NoSpace(e.message, f"{e.hint or ''} No snapshot was recorded.".strip()) from e


def _run_backup(
    repo: Repository,
    plan: BackupPlan,
    progress: ProgressCallback,
    options: BackupOptions | None,
) -> Snapshot:
    options = options or BackupOptions()
    started = time.monotonic()
    when, when_ns = local_now(), time.time_ns()
    snapshot_id = repo.new_snapshot_id()
    stats = _Stats()
    total = sum(image.size for image in plan.images)
    meter = Meter("backup", total, progress)
    with repo.writer() as lease:
        parent = latest_of_source(repo.snapshots(on_damage=lambda *_: None), plan.source_id)
        lease.update(parent=parent.id if parent else None)
        pipeline = _Pipeline(repo, options, meter, stats)
        images: list[ImageRecord] = []
        all_ids: list[ChunkIndex] = []
        try:
            unreadable: dict[str, list[list[int]]] = {}
            for image in plan.images:
                meter.set_item(image.name)
                ids = ChunkIndex.empty(-(-image.size // repo.block_size))
                all_ids.append(ids)
                prior = unchanged_from(repo, parent, image)
                if prior is not None and options.early_check is not None:
                    options.early_check.look_up(repo, prior)
                bad = pipeline.image(image, ids, prior)
                if bad:
                    unreadable[image.name] = bad
            pipeline.finish()
            pipeline.check()
        except KeyboardInterrupt:
            keep_stored_chunks(repo, pipeline)
            if options.early_check is not None:
                options.early_check.cancel()
            raise Cancelled("The backup was interrupted. No snapshot was recorded.") from None
        except BaseException:
            keep_stored_chunks(repo, pipeline)
            if options.early_check is not None:
                options.early_check.cancel()
            raise
        pipeline.close()
        repo.commit_chunks()
        repo.sync_chunk_dirs()
        for image, ids in zip(plan.images, all_ids, strict=True):
            mac = repo.write_index(snapshot_id, image.name, ids, image.size)
            record: dict[str, Any] = {}
            if image.used is not None:
                record["used"] = image.used.used_bytes
            if image.name in unreadable:
                record["unreadable"] = tuple((s, n) for s, n in unreadable[image.name])

                hit = files_hit(
                    image.path,
                    image.offset,
                    image.size,
                    str(image.meta.get("fstype", "")),
                    unreadable[image.name],
                )
                if hit:
                    record["unreadable_files"] = tuple(hit)
            images.append(
                ImageRecord.make(
                    image.meta,
                    name=image.name,
                    offset=image.offset,
                    size=image.size,
                    blocks=len(ids),
                    method=image.method,
                    index_mac=mac,
                    **record,
                )
            )
        meter.finish()
        manifest = Manifest.make(
            plan.extra,
            id=snapshot_id,
            time=when.isoformat(),
            time_ns=when_ns,
            hostname=socket.gethostname(),
            source=plan.source,
            source_id=plan.source_id,
            kind=plan.kind,
            size=plan.size,
            parent=parent.id if parent else None,
            images=tuple(images),
            stats=stats.record(round(time.monotonic() - started, 3)),
        )
        if options.early_check is not None:
            options.early_check.finish()  # its lookups hold only under the writer lease
        return repo.commit_snapshot(manifest.to_dict())


def describe_unreadable(snapshot: Snapshot) -> list[str]:
    """Lines naming the unreadable ranges a rescue backup recorded, and the files they hit."""
    lines = []
    for image in snapshot.images:
        for start, length in image.unreadable:
            lines.append(
                f"{image.name}: {human_size(length)} unreadable at byte {start} (stored as zeros)"
            )
        for path in image.unreadable_files:
            lines.append(f"{image.name}: damaged file {path}")
    return lines


def backup_path(
    repo: Repository,
    source: str | Path,
    *,
    progress: ProgressCallback = no_progress,
    options: BackupOptions | None = None,
) -> Snapshot:
    """Back up an image file or block device raw (every non-zero block)."""
    return run_backup(repo, plan_file(str(source)), progress=progress, options=options)


__all__ = [
    "BackupOptions",
    "BackupPlan",
    "HourglassError",
    "ImageSource",
    "backup_path",
    "plan_file",
    "run_backup",
]
