"""Block views without FUSE: random reads, the shared cache, damage; choosing the image."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from imaging.errors import UsageError
from imaging.files import paths
from imaging.files.blockview import ChunkCache, Damage, DamagedRead, ImageView
from imaging.files.images import image_for
from imaging.image.backup import backup_path
from imaging.repository.records import ImageRecord, Manifest
from imaging.repository.store import Repository, Snapshot
from tests.support import MiB, write_random_image


def view_of(repo: Repository, snapshot: Snapshot, cache: ChunkCache, **kw: Any) -> ImageView:
    ids = repo.load_index(snapshot, "data")
    size = snapshot.image("data").size
    return ImageView(f"{snapshot.id}.data", ids, size, repo.block_size, cache, **kw)


def test_random_reads_match_the_source(tmp_path: Path, repo: Repository) -> None:
    source = tmp_path / "source.img"
    write_random_image(source, 21 * MiB + 1234)
    data = source.read_bytes()
    snapshot = backup_path(repo, source)
    view = view_of(repo, snapshot, ChunkCache(repo, capacity=8 * MiB))
    rng = random.Random(5)
    for _ in range(200):
        offset = rng.randrange(0, len(data) + 10)
        size = rng.randrange(0, 9 * MiB)
        assert view.read(offset, size) == data[offset : offset + size]


def test_shared_chunks_are_decoded_once(tmp_path: Path, repo: Repository) -> None:
    source = tmp_path / "source.img"
    write_random_image(source, 16 * MiB, zero_every=0)
    first = backup_path(repo, source)
    second = backup_path(repo, source)
    cache = ChunkCache(repo)
    for snapshot in (first, second):
        view = view_of(repo, snapshot, cache)
        for offset in range(0, 16 * MiB, 1 * MiB):
            view.read(offset, 4096)
    assert cache.fetched == 16 * MiB // repo.block_size


def test_a_damaged_chunk_fails_only_its_range(tmp_path: Path, repo: Repository) -> None:
    source = tmp_path / "source.img"
    write_random_image(source, 12 * MiB, zero_every=0)
    snapshot = backup_path(repo, source)
    ids = repo.load_index(snapshot, "data")
    chunk = repo.chunk_path(ids[1])  # the second block
    raw = bytearray(chunk.read_bytes())
    raw[100] ^= 1
    chunk.write_bytes(bytes(raw))
    seen: list[Damage] = []
    view = view_of(repo, snapshot, ChunkCache(repo), on_damage=seen.append)
    assert view.read(0, 4096) == source.read_bytes()[:4096]
    with pytest.raises(DamagedRead) as caught:
        view.read(repo.block_size + 10, 100)
    assert caught.value.errno == 5
    assert seen[0].chunk == ids[1].hex() and seen[0].offset == repo.block_size + 10
    assert view.read(8 * MiB, 10) == source.read_bytes()[8 * MiB : 8 * MiB + 10]


def snapshot_with(images: list[dict[str, Any]]) -> Snapshot:
    records = tuple(
        ImageRecord(offset=0, blocks=1, index_mac="0" * 64, **image) for image in images
    )
    return Snapshot(
        Manifest(
            id="ab" * 16,
            time="2026-11-22T10:31:05+01:00",
            source="/dev/sda",
            source_id="disk:a",
            kind="disk",
            size=4,
            images=records,
        )
    )


def test_choosing_the_image() -> None:
    disk = snapshot_with(
        [
            {"name": "head", "size": 1},
            {"name": "p1", "number": 1, "fstype": "vfat", "size": 1},
            {"name": "p2", "number": 2, "fstype": "swap", "size": 1},
            {"name": "p3", "number": 3, "fstype": "ext4", "size": 1},
        ]
    )
    assert image_for(disk, 3) == "p3"
    with pytest.raises(UsageError, match="2 partitions"):
        image_for(disk, None)
    with pytest.raises(UsageError, match="no partition 7"):
        image_for(disk, 7)
    one = snapshot_with([{"name": "head", "size": 1}, {"name": "p1", "number": 1, "size": 1}])
    assert image_for(one, None) == "p1"
    assert image_for(snapshot_with([{"name": "data", "size": 1}]), None) == "data"


def test_paths_refuse_dot_dot() -> None:
    assert paths.split("/home//ann/./x") == ["home", "ann", "x"]
    with pytest.raises(UsageError):
        paths.split("/home/../etc")
    assert not paths.safe_name("..") and not paths.safe_name("a/b") and paths.safe_name("a")
