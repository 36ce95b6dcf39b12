"""Which bytes of an image a filesystem uses, summarised per block of the repository.

Built from a stream of sorted ``(start, length)`` ranges (partclone's domain file, say); keeps
one state byte per block and the exact ranges only for blocks that are partly used, so a
2 TiB partition costs 2 MiB (at 1 MiB blocks) plus its partial blocks.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

UNUSED = 0
FULL = 1
PARTIAL = 2


class UsedMap:
    def __init__(self, size: int, block_size: int) -> None:
        self.size = size
        self.block_size = block_size
        self.count = -(-size // block_size)
        self.states = bytearray(self.count)
        self.partial: dict[int, list[tuple[int, int]]] = {}
        self.used_bytes = 0
        self._end = 0

    @classmethod
    def from_ranges(cls, size: int, block_size: int, ranges: Iterable[tuple[int, int]]) -> UsedMap:
        used = cls(size, block_size)
        for start, length in ranges:
            used.add(start, length)
        used.seal()
        return used

    @classmethod
    def everything(cls, size: int, block_size: int) -> UsedMap:
        return cls.from_ranges(size, block_size, [(0, size)])

    def ranges(self) -> Iterator[tuple[int, int]]:
        """The used ``(start, length)`` ranges, in order, adjacent ones merged."""
        bs = self.block_size
        run_start = run_end = 0
        for block, state in enumerate(self.states):
            if state == UNUSED:
                continue
            pieces = (
                [(0, min(bs, self.size - block * bs))] if state == FULL else self.partial[block]
            )
            for offset, length in pieces:
                start = block * bs + offset
                if start != run_end:
                    if run_end > run_start:
                        yield run_start, run_end - run_start
                    run_start = start
                run_end = start + length
        if run_end > run_start:
            yield run_start, run_end - run_start

    def rescaled(self, block_size: int) -> UsedMap:
        """The same used bytes summarised per ``block_size`` block (plans are made before the
        repository, and with it the block size, is known)."""
        if block_size == self.block_size:
            return self
        return UsedMap.from_ranges(self.size, block_size, self.ranges())

    def union(self, extra: Iterable[tuple[int, int]]) -> UsedMap:
        """This map with the ``extra`` ranges added (any order, overlaps allowed): a second
        opinion on what is used only ever adds to what is read."""
        merged = merge_ranges(heapq.merge(self.ranges(), sorted(extra)))
        return UsedMap.from_ranges(self.size, self.block_size, merged)

    def add(self, start: int, length: int) -> None:
        """Add a used range; ranges must come in ascending order and not overlap."""
        if length <= 0:
            return
        if start < self._end:
            raise ValueError(f"used ranges out of order at {start}")
        end = min(start + length, self.size)
        if start >= end:
            return
        self._end = end
        self.used_bytes += end - start
        bs = self.block_size
        pos = start
        while pos < end:
            block = pos // bs
            block_end = min((block + 1) * bs, self.size)
            piece_end = min(end, block_end)
            self.partial.setdefault(block, []).append((pos - block * bs, piece_end - pos))
            pos = piece_end

    def seal(self) -> None:
        """Turn collected ranges into per-block states; call once after the last add()."""
        bs = self.block_size
        for block, ranges in list(self.partial.items()):
            block_len = min(bs, self.size - block * bs)
            merged: list[tuple[int, int]] = []
            for start, length in ranges:
                if merged and merged[-1][0] + merged[-1][1] == start:
                    merged[-1] = (merged[-1][0], merged[-1][1] + length)
                else:
                    merged.append((start, length))
            if merged == [(0, block_len)]:
                self.states[block] = FULL
                del self.partial[block]
            else:
                self.states[block] = PARTIAL
                self.partial[block] = merged

    def state(self, block: int) -> int:
        return self.states[block]

    def gaps(self, block: int) -> list[tuple[int, int]]:
        """Unused ``(start, length)`` pieces inside a partly used block."""
        block_len = min(self.block_size, self.size - block * self.block_size)
        result = []
        pos = 0
        for start, length in self.partial.get(block, []):
            if start > pos:
                result.append((pos, start - pos))
            pos = start + length
        if pos < block_len:
            result.append((pos, block_len - pos))
        return result

    def blocks_to_read(self) -> int:
        return self.count - self.states.count(UNUSED)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Sorted ``(start, length)`` ranges with overlapping and adjacent ones joined."""
    run_start = run_end = -1
    for start, length in ranges:
        if length <= 0:
            continue
        if start > run_end:
            if run_end > run_start:
                yield run_start, run_end - run_start
            run_start = start
        run_end = max(run_end, start + length)
    if run_end > run_start:
        yield run_start, run_end - run_start
