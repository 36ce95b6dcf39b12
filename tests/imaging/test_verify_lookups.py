"""The structure check's lookups are handed to its threads in batches: every item once, in
order, with never more than a batch of futures alive."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from imaging.repository import verify


def test_batched_lookups_cover_every_item_in_order() -> None:
    items = [i.to_bytes(4, "little") for i in range(3 * verify.LOOKUP_BATCH + 17)]
    seen: list[bytes] = []
    lock = threading.Lock()
    pending_peak = 0

    def look(item: bytes) -> bytes:
        with lock:
            seen.append(item)
        return item[::-1]

    with ThreadPoolExecutor(4) as pool:
        out = []
        for result in verify._batched(pool, look, iter(items)):
            out.append(result)
            pending_peak = max(pending_peak, pool._work_queue.qsize())
    assert out == [i[::-1] for i in items]
    assert sorted(seen) == sorted(items)
    assert pending_peak <= verify.LOOKUP_BATCH
