"""Random access to one image of a snapshot, chunk by chunk, through a shared cache.

The cache is keyed by chunk id, so a chunk shared by several snapshots (or several blocks of
one image) is read and decoded once. Concurrent readers of the same chunk wait for one
decode instead of starting their own, and sequential reading prefetches the next chunks on a
thread pool (decoding releases the GIL: zstd, AES-GCM and BLAKE3 run in C).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from imaging.errors import IntegrityError
from imaging.memory import keep_large_buffers
from imaging.repository.codec import UNUSED_ID, ZERO_ID
from imaging.repository.records import ChunkIndex
from imaging.repository.store import Repository

# 32 chunks: a larger cache made a single-file restore's server much larger and no faster
# (bench/README.md), and the appliance lives in RAM.
DEFAULT_CACHE_BYTES = 128 * 1024 * 1024
READAHEAD_BYTES = 12 * 1024 * 1024  # decoded ahead of a sequential reader


@dataclass(frozen=True)
class Damage:
    """A read that hit a damaged chunk: which view, which bytes of it, which chunk, why."""

    view: str
    offset: int
    length: int
    chunk: str
    reason: str


class DamagedRead(OSError):
    """Raised by :meth:`ImageView.read` when a chunk under the range cannot be decoded."""

    def __init__(self, damage: Damage) -> None:
        super().__init__(5, damage.reason)  # EIO
        self.damage = damage


class ChunkCache:
    """Decoded chunks by id, least recently used dropped first, with in-flight de-duplication."""

    def __init__(
        self, repo: Repository, capacity: int = DEFAULT_CACHE_BYTES, workers: int = 2
    ) -> None:
        keep_large_buffers()
        self.repo = repo
        self.capacity = capacity
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._pending: dict[bytes, Future[bytes]] = {}
        self._failed: dict[bytes, str] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunk")
        self.fetched = 0  # chunks read from the repository (for measurements and tests)

    def get(self, chunk_id: bytes) -> bytes:
        """The plaintext of ``chunk_id``; :class:`IntegrityError` if it is damaged."""
        future, owner = self._claim(chunk_id)
        if owner:
            self._load(chunk_id, future)
        return future.result()

    def prefetch(self, chunk_id: bytes) -> None:
        """Start decoding ``chunk_id`` in the background unless it is cached or under way."""
        future, owner = self._claim(chunk_id)
        if owner:
            self._pool.submit(self._load, chunk_id, future)

    def _claim(self, chunk_id: bytes) -> tuple[Future[bytes], bool]:
        with self._lock:
            data = self._data.get(chunk_id)
            if data is not None:
                self._data.move_to_end(chunk_id)
                done: Future[bytes] = Future()
                done.set_result(data)
                return done, False
            reason = self._failed.get(chunk_id)
            if reason is not None:
                failed: Future[bytes] = Future()
                failed.set_exception(IntegrityError(reason))
                return failed, False
            pending = self._pending.get(chunk_id)
            if pending is not None:
                return pending, False
            future: Future[bytes] = Future()
            self._pending[chunk_id] = future
            return future, True

    def _load(self, chunk_id: bytes, future: Future[bytes]) -> None:
        try:
            data = self.repo.read_chunk(chunk_id)
        except IntegrityError as e:
            with self._lock:
                self._failed[chunk_id] = e.message
                del self._pending[chunk_id]
            future.set_exception(e)
            return
        except BaseException as e:
            with self._lock:
                del self._pending[chunk_id]
            future.set_exception(e)
            return
        with self._lock:
            self.fetched += 1
            self._data[chunk_id] = data
            self._bytes += len(data)
            while self._bytes > self.capacity and len(self._data) > 1:
                _, dropped = self._data.popitem(last=False)
                self._bytes -= len(dropped)
            del self._pending[chunk_id]
        future.set_result(data)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class ImageView:
    """One image of a snapshot as a read-only byte range; ZERO and UNUSED blocks read as zeros."""

    def __init__(
        self,
        name: str,
        ids: ChunkIndex,
        size: int,
        block_size: int,
        cache: ChunkCache,
        on_damage: Callable[[Damage], None] | None = None,
    ) -> None:
        self.name = name
        self.ids = ids
        self.size = size
        self.block_size = block_size
        self.cache = cache
        self.on_damage = on_damage
        self._last_block = -2
        self._blocks = len(ids)

    def chunk_id(self, block: int) -> bytes:
        return self.ids[block]

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer at the end of the image)."""
        if offset >= self.size or size <= 0:
            return b""
        size = min(size, self.size - offset)
        first = offset // self.block_size
        last = (offset + size - 1) // self.block_size
        self._readahead(first, last)
        parts = []
        for block in range(first, last + 1):
            start = block * self.block_size
            lo = max(offset, start) - start
            hi = min(offset + size, start + self.block_size) - start
            chunk_id = self.chunk_id(block)
            if chunk_id in (ZERO_ID, UNUSED_ID):
                parts.append(bytes(hi - lo))
                continue
            try:
                data = self.cache.get(chunk_id)
            except IntegrityError as e:
                damage = Damage(self.name, start + lo, hi - lo, chunk_id.hex(), e.message)
                if self.on_damage is not None:
                    self.on_damage(damage)
                raise DamagedRead(damage) from None
            parts.append(data[lo:hi])
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _readahead(self, first: int, last: int) -> None:
        sequential = self._last_block in (first - 1, first)
        self._last_block = last
        if not sequential:
            return
        ahead = max(1, READAHEAD_BYTES // self.block_size)
        for block in range(last + 1, min(last + 1 + ahead, self._blocks)):
            chunk_id = self.chunk_id(block)
            if chunk_id not in (ZERO_ID, UNUSED_ID):
                self.cache.prefetch(chunk_id)
