"""Restore: write a snapshot's images back to a file or block device, then verify them.

Workers fetch, authenticate, decompress and write chunks with large aligned ``pwrite``s in
parallel (from an object store, more of them, each fetching a run of chunks that lie end to
end in one pack with one ranged GET: nothing is staged on local disk); all-zero blocks become
holes in a file or a zero-out request on a block device, and blocks the filesystem does not
use are not written at all. After writing, the target is flushed, dropped from the page cache
and read back: each block must hash to its chunk id.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import stat
import struct
import threading
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from imaging.disks import mounts, sysfs
from imaging.errors import (
    Cancelled,
    HourglassError,
    IntegrityError,
    TargetTooSmall,
    TargetUnsuitable,
)
from imaging.image.backup import hole_map
from imaging.image.blockio import SourceFile, TargetFile, aligned_buffer
from imaging.image.devices import device_size, is_block_device, open_exclusive
from imaging.image.usedmap import UNUSED
from imaging.memory import keep_large_buffers
from imaging.progress import Meter, ProgressCallback, no_progress
from imaging.repository import codec, fsutil
from imaging.repository.store import Repository, Snapshot
from imaging.units import count, decimal_size, human_size

# An object store: a GET costs a round trip, so more fetch at once, and neighbouring chunks
# of one pack come in one GET of up to RUN_BYTES. Memory: workers x run, twice (raw, plain).
REMOTE_WORKERS = 12
RUN_BYTES = 4 * 2**20 + 64 * 1024  # four 1 MiB chunks with their headers and trailers
WINDOW = 64  # blocks sorted by their place in the packs before they are cut into runs

BLKZEROOUT = 0x127F
BLKFLSBUF = 0x1261


class ChunkFeed(Protocol):
    """Where a restore's chunks come from when not read one by one in the images' order:
    a lab receiver's multicast and fill-in (imaging/lab/receiver.py)."""

    def fill(
        self,
        wanted: Collection[bytes],
        put: Callable[[bytes, bytes], None],
        check: Callable[[], None],
    ) -> None:
        """Call ``put(chunk_id, plaintext)`` once for each chunk of ``wanted``, in any order,
        each decoded and authenticated by its id; return when every one was put. ``check``
        raises when the restore is cancelled."""


@dataclass
class RestoreOptions:
    verify: bool = True
    ignore_damage: bool = False
    workers: int = 0
    cancel: threading.Event | None = None
    feed: ChunkFeed | None = None


@dataclass
class DamagedRange:
    image: str
    start: int
    length: int
    reason: str

    def describe(self) -> str:
        return (
            f"{self.image}: bytes {self.start}-{self.start + self.length - 1} "
            f"({human_size(self.length)}) filled with zeros: {self.reason}"
        )


@dataclass
class RestoreResult:
    snapshot: Snapshot
    target: str
    written: int = 0
    verified: bool = False
    damaged: list[DamagedRange] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)
    """Members of a set that lacked or held damaged data the restore read around."""


@dataclass(frozen=True)
class ImageTarget:
    """Where one image goes: ``path`` opened for writing, at byte ``offset``."""

    image: str
    path: str
    offset: int = 0
    create: bool = False  # a file target: create or empty it and size it to the image


def open_target(target: ImageTarget, size: int) -> int:
    """Open a restore target for writing; a block device exclusively (it fails if mounted),
    a file to be created is emptied and sized so zero blocks stay holes."""
    if is_block_device(target.path):
        return open_exclusive(target.path, os.O_WRONLY)
    if not target.create:
        return os.open(target.path, os.O_WRONLY)
    fd = os.open(target.path, os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, 0)
    os.ftruncate(fd, size)
    return fd


# Filesystems that match names without regard to case: a path spelled with other capitals
# names the same file, so "outside the repository" is decided on case-folded paths there.
CASE_INSENSITIVE = frozenset({"vfat", "msdos", "exfat", "ntfs", "ntfs3", "fuseblk", "fuse.exfat"})


def refuse_repository_target(repo: Repository, target: str) -> None:
    """:class:`TargetUnsuitable` (exit 6) when writing ``target`` would write into the
    repository: a file inside its directory by any path (a symlink, a bind mount, other
    capitals on FAT/exFAT/NTFS, a hard link), a block device below its filesystem (that
    device, its disk or another partition of it, the members of a dm or md device, a loop
    device's backing device), or a loop device whose backing file is inside it.

    Every restore goes through it (:func:`restore_images`), so no caller can forget it.
    """
    # An object store has no directory here; a set over several locations has one per
    # member on this machine, and each is protected.
    for root in repo.store.local_paths:
        _refuse_inside(root, target)


def _refuse_inside(root: Path, target: str) -> None:
    real = os.path.realpath(target)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISBLK(st.st_mode):
        _refuse_repository_device(root, target, real)
        return
    why = _aliases_repository(root, real, st)
    if why:
        raise TargetUnsuitable(
            f"{target} {why} the repository {root}: restoring onto it could destroy the "
            "repository. Hourglass never writes there.",
            "Choose a target outside the repository.",
        )


def _aliases_repository(root: Path, real: str, st: os.stat_result | None) -> str:
    """How the file ``real`` is part of the repository ("" when it is not)."""
    here = os.path.realpath(root).rstrip("/") + "/"
    if real.startswith(here) or real + "/" == here:
        return "is inside"
    try:
        top = os.stat(root)
    except OSError:
        return ""
    # Walk up from the file: a directory that *is* the repository's (same device and inode)
    # catches symlinks and bind mounts alike.
    for ancestor in (Path(real), *Path(real).parents):
        try:
            a = os.stat(ancestor)
        except OSError:
            continue
        if (a.st_dev, a.st_ino) == (top.st_dev, top.st_ino):
            return "is inside"
    if st is None or st.st_dev != top.st_dev:
        return ""
    if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
        return f"has {st.st_nlink} names (hard links) on the filesystem of"
    if fsutil.filesystem_type(root) in CASE_INSENSITIVE and real.casefold().startswith(
        here.casefold()
    ):
        return "is inside"
    return ""


def _refuse_repository_device(root: Path, target: str, real: str) -> None:

    name = sysfs.name_of(real)
    devices, files = _layers(name, set())
    held = mounts.disks_of_path(str(root)) & devices
    if held:
        raise TargetUnsuitable(
            f"{target} holds the repository {root} (on /dev/{sorted(held)[0]}): "
            "Hourglass never writes to it.",
            "Choose another disk.",
        )
    for backing in files:
        why = _aliases_repository(root, os.path.realpath(backing), _stat(backing))
        if why:
            raise TargetUnsuitable(
                f"{target} is a loop device on {backing}, which {why} the repository "
                f"{root}: Hourglass never writes there.",
                "Choose another disk.",
            )


def _layers(name: str, seen: set[str]) -> tuple[set[str], list[str]]:
    """The block devices that writing ``name`` writes to (itself, its disk, the members of a
    dm/md device, a loop device's backing device, recursively) and the files loop devices
    among them are backed by."""

    if name in seen:
        return set(), []
    seen.add(name)
    disk = sysfs.parent_disk(name)
    devices, files = {name, disk}, []
    for member in sysfs.slaves(disk):
        more, more_files = _layers(member, seen)
        devices |= more
        files += more_files
    backing = sysfs.backing_file(disk)
    if backing:
        st = _stat(backing)
        if st is not None and stat.S_ISBLK(st.st_mode):
            below = sysfs.name_of_numbers(os.major(st.st_rdev), os.minor(st.st_rdev))
            if below:
                more, more_files = _layers(below, seen)
                devices |= more
                files += more_files
        else:
            files.append(backing)
    return devices, files


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def check_target_size(target: str, needed: int) -> None:
    """:class:`TargetTooSmall` naming the size needed when ``target`` cannot hold it."""
    if not os.path.exists(target) or not is_block_device(target):
        return
    have = device_size(target)
    if have < needed:
        raise TargetTooSmall(
            f"{target} ({decimal_size(have)}, {have} bytes) is smaller than the image needs "
            f"({decimal_size(needed)}, {needed} bytes).",
            "Choose a larger disk or restore single partitions.",
        )


def target_failed(path: str, offset: int, error: OSError) -> HourglassError:
    """A write to the target failed: say so plainly (a disk that died or was unplugged)."""
    if error.errno == errno.ENOSPC:
        return HourglassError(f"{path} is full at byte {offset}: the image does not fit.")
    return HourglassError(
        f"Writing to {path} failed at byte {offset}: {error.strerror}. The restore stopped; "
        "the target holds a partial image.",
        "The target disk may have failed or been unplugged. Check its cable and health "
        "(smartctl -a), or restore to another disk.",
    )


def _zero_out(fd: int, block_device: bool, offset: int, length: int, zero: bytes) -> None:
    if block_device:
        try:
            fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", offset, length))
            return
        except OSError:
            pass
    pos = 0
    while pos < length:
        n = min(len(zero), length - pos)
        os.pwrite(fd, zero[:n], offset + pos)
        pos += n


@dataclass
class _Run:
    """Chunks that lie end to end in one pack, read with one GET (at most RUN_BYTES)."""

    pack: str
    first: int
    end: int
    items: list[tuple[bytes, int, int, int]] = field(default_factory=list)
    """(chunk id, start in the image, length in the image, stored size)"""

    def takes(self, pack: str, at: int, stored: int) -> bool:
        return pack == self.pack and at == self.end and self.end - self.first + stored <= RUN_BYTES

    def add(self, chunk_id: bytes, start: int, length: int, stored: int) -> None:
        self.items.append((chunk_id, start, length, stored))
        self.end += stored


class _Writer:
    def __init__(self, repo: Repository, options: RestoreOptions, meter: Meter) -> None:
        self.repo = repo
        self.options = options
        self.meter = meter
        # Twice the cores: while one worker waits for the repository drive, another decodes.
        # Chunks in packs (an object store, S3Store): runs of neighbours, more workers.
        self.place: Callable[[bytes], tuple[str, int, int] | None] | None = getattr(
            repo.store, "chunk_place", None
        )
        self.fetch_run: Callable[[str, int, list[int]], list[bytes]] | None = getattr(
            repo.store, "get_pack_run", None
        )
        local_workers = 2 * (os.cpu_count() or 1)
        self.workers = options.workers or (
            max(REMOTE_WORKERS, local_workers) if self.place is not None else local_workers
        )
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="restore")
        keep_large_buffers()
        self.zero = bytes(repo.block_size)
        self.damaged: list[DamagedRange] = []
        self.lock = threading.Lock()

    def check(self) -> None:
        if self.options.cancel is not None and self.options.cancel.is_set():
            raise Cancelled("The restore was cancelled; the target holds a partial image.")

    def write_image(
        self, snapshot: Snapshot, image: str, target: TargetFile, offset: int, block_device: bool
    ) -> int:
        futures: list[Future[None]] = []
        written = 0
        # Blocks found in packs, not yet handed to workers: a backup's workers put chunks
        # into a pack in the order they finish, so neighbours on disk are near each other
        # in the pack but not always in order. A window is sorted by place, then cut in runs.
        window: list[tuple[str, int, int, bytes, int, int]] = []

        def submit(task: Future[None]) -> None:
            nonlocal futures
            futures.append(task)
            if len(futures) > 3 * self.workers:
                futures = _reap(futures, wait_one=True)

        def flush_window() -> None:
            run: _Run | None = None
            for pack, at, stored, chunk_id, start, length in sorted(window):
                if run is None or not run.takes(pack, at, stored):
                    if run is not None:
                        submit(self.executor.submit(self._run, image, run, target, offset))
                    run = _Run(pack, at, at)
                run.add(chunk_id, start, length, stored)
            if run is not None:
                submit(self.executor.submit(self._run, image, run, target, offset))
            window.clear()

        for chunk_id, start, length in self._data_blocks(
            snapshot, image, target, offset, block_device
        ):
            written += length
            place = self.place(chunk_id) if self.place is not None else None
            if place is not None:
                window.append((*place, chunk_id, start, length))
                if len(window) >= WINDOW:
                    flush_window()
                continue
            flush_window()  # a missing chunk: _block says so, in order
            submit(
                self.executor.submit(self._block, image, chunk_id, target, offset, start, length)
            )
        flush_window()
        for f in futures:
            f.result()
        return written

    def _data_blocks(
        self, snapshot: Snapshot, image: str, target: TargetFile, offset: int, block_device: bool
    ) -> Iterator[tuple[bytes, int, int]]:
        """The image's blocks that hold data, as (chunk id, start, length), in order. Blocks
        the filesystem does not use are counted done; runs of zero blocks are zeroed out
        on a block device (coalesced, each before the data block after it)."""
        ids = self.repo.load_index(snapshot, image)
        size = snapshot.image(image).size
        bs = self.repo.block_size
        zero_run: list[int] = []  # [start, length] of pending zero blocks, coalesced

        def flush_zero() -> None:
            if zero_run:
                try:
                    _zero_out(target.fd, block_device, offset + zero_run[0], zero_run[1], self.zero)
                except OSError as e:
                    raise target_failed(target.path, offset + zero_run[0], e) from e
                zero_run.clear()

        for block, chunk_id in enumerate(ids):
            self.check()
            start = block * bs
            length = min(bs, size - start)
            if chunk_id == codec.UNUSED_ID:
                self.meter.add(length)
                continue
            if chunk_id == codec.ZERO_ID:
                if block_device:
                    if zero_run and zero_run[0] + zero_run[1] == start:
                        zero_run[1] += length
                    else:
                        flush_zero()
                        zero_run.extend([start, length])
                self.meter.add(length)
                continue
            flush_zero()
            yield chunk_id, start, length
        flush_zero()

    def write_fed(
        self,
        snapshot: Snapshot,
        targets: list[tuple[ImageTarget, TargetFile, bool]],
        feed: ChunkFeed,
    ) -> int:
        """Every image at once from ``feed``: each chunk is written wherever any image
        needs it, in the order the feed delivers (a lab's multicast, where a PC that joined
        late takes the second half of the disk first)."""
        places: dict[bytes, list[tuple[str, TargetFile, int, int, int]]] = {}
        written = 0
        for t, out, block_device in targets:
            for chunk_id, start, length in self._data_blocks(
                snapshot, t.image, out, t.offset, block_device
            ):
                places.setdefault(chunk_id, []).append((t.image, out, t.offset, start, length))
                written += length

        def put(chunk_id: bytes, data: bytes) -> None:
            for image, out, offset, start, length in places[chunk_id]:
                self._block(image, chunk_id, out, offset, start, length, plain=data)

        feed.fill(places.keys(), put, self.check)
        return written

    def _run(self, image: str, run: _Run, target: TargetFile, offset: int) -> None:
        """Chunks end to end in one pack: one GET, then each decoded and written."""
        self.check()
        assert self.fetch_run is not None
        raws = self.fetch_run(run.pack, run.first, [n for _, _, _, n in run.items])
        for (chunk_id, start, length, _), raw in zip(run.items, raws, strict=True):
            self._block(image, chunk_id, target, offset, start, length, raw)

    def _block(
        self,
        image: str,
        chunk_id: bytes,
        target: TargetFile,
        offset: int,
        start: int,
        length: int,
        raw: bytes | None = None,
        plain: bytes | None = None,
    ) -> None:
        try:
            if plain is not None:
                data = plain
            elif raw is None:
                data = self.repo.read_chunk(chunk_id)
            else:
                data = codec.decode_chunk(chunk_id, raw, self.repo.keys)
            if len(data) != length:
                raise IntegrityError(
                    f"Chunk {chunk_id.hex()} holds {len(data)} bytes where {image} needs {length}."
                )
        except IntegrityError as e:
            if not self.options.ignore_damage:
                raise IntegrityError(
                    f"{e.message} It holds bytes {start}-{start + length - 1} of {image}.",
                    "Run `hourglass verify --read-data` for the full damage report, or restore "
                    "with --ignore-damage to write zeros there and keep going.",
                ) from None
            with self.lock:
                self.damaged.append(DamagedRange(image, start, length, e.message))
            data = self.zero[:length]
        try:
            target.write_at(data, offset + start)
        except OSError as e:
            raise target_failed(target.path, offset + start, e) from e
        self.meter.add(length, new_bytes=length)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _reap(futures: list[Future[None]], *, wait_one: bool) -> list[Future[None]]:
    if wait_one:
        futures[0].result()
    pending = []
    for f in futures:
        if f.done():
            f.result()
        else:
            pending.append(f)
    return pending


def restore_images(
    repo: Repository,
    snapshot: Snapshot,
    targets: list[ImageTarget],
    *,
    progress: ProgressCallback = no_progress,
    options: RestoreOptions | None = None,
    result: RestoreResult | None = None,
) -> RestoreResult:
    """Write each image to its target, then (by default) read it back and compare. The
    caller holds the reader lease (:func:`imaging.jobs.restore` does)."""
    options = options or RestoreOptions()
    result = result or RestoreResult(snapshot=snapshot, target=targets[0].path if targets else "")
    for path in dict.fromkeys(t.path for t in targets):
        refuse_repository_target(repo, path)
    total = sum(snapshot.image(t.image).size for t in targets)
    meter = Meter("restore", total, progress)
    writer = _Writer(repo, options, meter)
    try:
        if options.feed is not None:
            result.written += _restore_fed(writer, snapshot, targets, options.feed)
            targets_left: list[ImageTarget] = []
        else:
            targets_left = targets
        for target in targets_left:
            meter.set_item(target.image)
            block_device = is_block_device(target.path)
            size = snapshot.image(target.image).size
            try:
                out = TargetFile(open_target(target, size), target.path)
            except OSError as e:
                raise HourglassError(f"Cannot open {target.path} for writing: {e.strerror}.") from e
            try:
                result.written += writer.write_image(
                    snapshot, target.image, out, target.offset, block_device
                )
                try:
                    out.sync()
                except OSError as e:
                    raise target_failed(target.path, 0, e) from e
            finally:
                out.close()
    except KeyboardInterrupt:
        raise Cancelled("The restore was interrupted; the target holds a partial image.") from None
    finally:
        writer.close()
    result.damaged.extend(writer.damaged)
    meter.finish()
    if options.verify:
        verify_written(repo, snapshot, targets, progress=progress, options=options, result=result)
    return result


def _restore_fed(
    writer: _Writer, snapshot: Snapshot, targets: list[ImageTarget], feed: ChunkFeed
) -> int:
    opened: list[tuple[ImageTarget, TargetFile, bool]] = []
    try:
        for target in targets:
            size = snapshot.image(target.image).size
            try:
                out = TargetFile(open_target(target, size), target.path)
            except OSError as e:
                raise HourglassError(f"Cannot open {target.path} for writing: {e.strerror}.") from e
            opened.append((target, out, is_block_device(target.path)))
        written = writer.write_fed(snapshot, opened, feed)
        for target, out, _ in opened:
            try:
                out.sync()
            except OSError as e:
                raise target_failed(target.path, 0, e) from e
        return written
    finally:
        for _, out, _ in opened:
            out.close()


def verify_written(
    repo: Repository,
    snapshot: Snapshot,
    targets: list[ImageTarget],
    *,
    progress: ProgressCallback = no_progress,
    options: RestoreOptions | None = None,
    result: RestoreResult,
) -> None:
    """Read back what was written (bypassing the page cache) and compare with the chunk ids."""
    options = options or RestoreOptions()
    damaged = {(d.image, d.start) for d in result.damaged}
    bs = repo.block_size
    total = sum(snapshot.image(t.image).size for t in targets)
    meter = Meter("verify", total, progress)
    mismatches: list[str] = []
    for target in targets:
        ids = repo.load_index(snapshot, target.image)
        size = snapshot.image(target.image).size
        holes = hole_map(target.path, target.offset, size, bs)
        source = SourceFile(target.path)
        try:
            _drop_cache(source.fd)
            with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as pool:
                jobs = []
                for block, chunk_id in enumerate(ids):
                    start = block * bs
                    length = min(bs, size - start)
                    if chunk_id == codec.UNUSED_ID or (target.image, start) in damaged:
                        meter.add(length)
                        continue
                    if chunk_id == codec.ZERO_ID and holes and holes.state(block) == UNUSED:
                        meter.add(length)  # a hole in a file target reads as zeros
                        continue
                    jobs.append(
                        (
                            pool.submit(
                                _compare, repo, source, target.offset + start, length, chunk_id
                            ),
                            start,
                            length,
                        )
                    )
                    while len(jobs) > 8 or (jobs and block == len(ids) - 1):
                        job, job_start, job_length = jobs.pop(0)
                        if not job.result():
                            mismatches.append(f"{target.image} at byte {job_start}")
                        meter.add(job_length)
                for job, job_start, job_length in jobs:
                    if not job.result():
                        mismatches.append(f"{target.image} at byte {job_start}")
                    meter.add(job_length)
        finally:
            source.close()
    meter.finish()
    if mismatches:
        raise IntegrityError(
            f"Verification of {result.target} failed: what was written differs from the snapshot "
            f"in {count(len(mismatches), 'block')}: {', '.join(mismatches[:5])}.",
            "The target disk may be failing.",
        )
    result.verified = True


def _drop_cache(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, BLKFLSBUF)


_buffers = threading.local()


def _compare(
    repo: Repository, source: SourceFile, offset: int, length: int, chunk_id: bytes
) -> bool:
    """True when the ``length`` bytes at ``offset`` hash to ``chunk_id``."""
    buf: mmap.mmap | None = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < length:
        buf = _buffers.buf = aligned_buffer(max(length, repo.block_size))
    with memoryview(buf)[:length] as view:
        try:
            source.read_into(view, offset)
        except OSError:
            return False
        if chunk_id == codec.ZERO_ID:
            return codec.is_zero(view)
        return bool(repo.keys.chunk_id(view) == chunk_id)


def restore_snapshot(
    repo: Repository,
    snapshot: Snapshot,
    target: str | Path,
    *,
    progress: ProgressCallback = no_progress,
    options: RestoreOptions | None = None,
) -> RestoreResult:
    """Restore a single-image snapshot (a partition or an image file) to ``target``."""
    target = str(target)
    images = snapshot.images
    if len(images) != 1:
        raise HourglassError(
            f"Snapshot {snapshot.id[:12]} holds {len(images)} images (a whole disk).",
            "Restore it to a disk, or name one partition as SNAPSHOT@N.",
        )
    check_target_size(target, images[0].size)
    result = RestoreResult(snapshot=snapshot, target=target)
    return restore_images(
        repo,
        snapshot,
        [ImageTarget(image=images[0].name, path=target, create=True)],
        progress=progress,
        options=options,
        result=result,
    )
