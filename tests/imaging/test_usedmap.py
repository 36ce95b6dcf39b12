"""UsedMap: ranges survive summarising per block and mapping again at another block size."""

from __future__ import annotations

import random

import pytest

from imaging.image.usedmap import FULL, PARTIAL, UNUSED, UsedMap

MiB = 1024 * 1024


def merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, length in ranges:
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], out[-1][1] + length)
        else:
            out.append((start, length))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_rescaled_map_keeps_every_used_byte(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randint(1, 40 * MiB)
    ranges, pos = [], 0
    while True:
        pos += rng.choice([0, rng.randint(1, 3 * MiB)])
        if pos >= size:
            break
        length = min(rng.randint(1, 2 * MiB), size - pos)
        ranges.append((pos, length))
        pos += length
    used = UsedMap.from_ranges(size, 4 * MiB, ranges)
    assert list(used.ranges()) == merged(ranges)
    for block_size in (256 * 1024, MiB, 2 * MiB):
        again = used.rescaled(block_size)
        assert list(again.ranges()) == merged(ranges)
        assert again.used_bytes == used.used_bytes
        assert again.count == -(-size // block_size)


def test_rescaled_states_follow_the_smaller_blocks() -> None:
    used = UsedMap.from_ranges(12 * MiB, 4 * MiB, [(0, 4 * MiB), (8 * MiB, 8192)])
    small = used.rescaled(MiB)
    assert list(small.states) == [FULL] * 4 + [UNUSED] * 4 + [PARTIAL] + [UNUSED] * 3
    assert small.gaps(8) == [(8192, MiB - 8192)]
    assert used.rescaled(4 * MiB) is used
