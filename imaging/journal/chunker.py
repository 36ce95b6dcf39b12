"""FastCDC over a file, streamed: buffers of a few MiB, never the whole file in memory and
never an mmap (a file truncated under an mmap kills the reader with SIGBUS)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from fastcdc.fastcdc_cy import chunk_generator  # type: ignore[import-untyped]

# An average of 256 KiB: at 64 KiB the agent wrote four times as many chunk files, and at a
# steady 10 MB/s of changes spent twice the CPU (bench/agent.py) for 0.3 MiB less stored per
# 1 MiB edit. Segments record their parameters: those written before keep theirs.
MIN_SIZE = 64 * 1024
AVG_SIZE = 256 * 1024
MAX_SIZE = 1024 * 1024
CHUNKER = {"name": "fastcdc", "min": MIN_SIZE, "avg": AVG_SIZE, "max": MAX_SIZE}
_READ = 8 * 1024 * 1024


def chunks(f: BinaryIO) -> Iterator[memoryview]:
    """The content-defined chunks of ``f`` from where it is to its end, in order."""
    pending = b""
    while True:
        data = f.read(_READ)
        buf = pending + data if pending else data
        if not buf:
            return
        view = memoryview(buf)
        end = len(buf) if not data else None  # the last buffer: its last chunk is final
        offset = 0
        for chunk in chunk_generator(view, MIN_SIZE, AVG_SIZE, MAX_SIZE, False, None):
            # A chunk that reaches the buffer's end may be cut short by it: keep it for the
            # next buffer, where it ends where the content says.
            if end is None and chunk.offset + chunk.length >= len(buf):
                break
            yield view[chunk.offset : chunk.offset + chunk.length]
            offset = chunk.offset + chunk.length
        if end is not None:
            return
        pending = bytes(view[offset:])
