"""The allocator keeps freed 4 MiB buffers: a chunk's bytes no longer cost a fresh mapping
(a thousand page faults, each zeroing a page) every time a worker thread handles one."""

from __future__ import annotations

import subprocess
import sys

# What restore workers do with each chunk: a few new 4 MiB bytes objects, freed at once.
WORKERS = """
import resource, sys, threading
if sys.argv[1] == "tuned":
    from imaging.memory import keep_large_buffers
    assert keep_large_buffers()

def work():
    for i in range(50):
        data = bytes([i % 251]) * (4 << 20)
        plain = data[1:] + b"x"
        del data, plain

before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", WORKERS, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def test_worker_threads_reuse_freed_chunk_buffers() -> None:
    plain, tuned = page_faults("plain"), page_faults("tuned")
    # 4 threads x 50 rounds x 2 buffers of 1,024 pages: some 400,000 faults when each buffer
    # is mapped anew; a few thousand when the heap keeps them.
    assert plain > 100_000, plain
    assert tuned < plain // 10, (plain, tuned)
