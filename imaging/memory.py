"""Tell glibc's allocator to keep freed 4 MiB buffers instead of giving them back.

Every chunk the engine handles passes through a few new ``bytes`` of up to 4 MiB (the chunk
file read, the decrypted body, the decompressed block). glibc serves allocations that large
with a fresh ``mmap`` and unmaps them on free, so each one costs a thousand page faults,
each zeroing a page, and a restore spends much of its system time there. Keeping them costs
no peak memory: the buffers in use at once are bounded by the worker pools. bench/README.md
has the measurements.
"""

from __future__ import annotations

import contextlib
import threading

from imaging.libc import libc as load_libc

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# Above a chunk file's size (4 MiB of plaintext plus header and trailer), below glibc's
# own ceiling for this setting (32 MiB on 64-bit).
MMAP_THRESHOLD = 16 * 2**20
TRIM_THRESHOLD = 64 * 2**20

_done = threading.Event()


def keep_large_buffers() -> bool:
    """Set the thresholds once per process; False where the C library is not glibc."""
    if _done.is_set():
        return True
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = load_libc()
        mallopt = libc.mallopt
        if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1:
            mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            _done.set()
    return _done.is_set()
