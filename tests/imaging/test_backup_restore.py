"""Back up image files, restore them, deduplicate, and find damage."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from imaging.errors import Cancelled, IntegrityError
from imaging.image.backup import BackupOptions, BackupPlan, ImageSource, backup_path, run_backup
from imaging.image.restore import ImageTarget, RestoreOptions, restore_images, restore_snapshot
from imaging.image.usedmap import UsedMap
from imaging.progress import Progress
from imaging.repository import codec
from imaging.repository.store import Repository, Snapshot
from imaging.repository.verify import verify
from tests.support import MiB, loop_device, write_random_image


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.img"
    write_random_image(path, 37 * MiB + 4096 + 17)  # ends in a partial block
    return path


def chunk_files(repo: Repository) -> list[Path]:
    return sorted(Path(e.path) for e in repo.iter_chunk_files())


@pytest.mark.parametrize("fixture", ["repo", "plain_repo"])
def test_round_trip(
    fixture: str, request: pytest.FixtureRequest, source: Path, tmp_path: Path
) -> None:
    repo: Repository = request.getfixturevalue(fixture)
    events: list[Progress] = []
    snapshot = backup_path(repo, source, progress=events.append)
    assert events[-1].finished and events[-1].done == source.stat().st_size
    assert snapshot.size == source.stat().st_size
    out = tmp_path / "restored.img"
    result = restore_snapshot(repo, snapshot, out)
    assert result.verified
    assert out.read_bytes() == source.read_bytes()


def test_zero_blocks_are_not_stored_and_restore_sparse(repo: Repository, tmp_path: Path) -> None:
    path = tmp_path / "sparse.img"
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
        f.seek(20 * MiB)
        f.write(b"data" * 1000)
    snapshot = backup_path(repo, path)
    assert len(chunk_files(repo)) == 1
    st = snapshot.manifest["stats"]
    assert st["zero_bytes"] == 64 * MiB - repo.block_size
    out = tmp_path / "out.img"
    restore_snapshot(repo, snapshot, out)
    assert out.read_bytes() == path.read_bytes()
    assert out.stat().st_blocks * 512 < 8 * MiB  # holes, not written zeros


def test_second_backup_stores_only_changes(repo: Repository, source: Path, tmp_path: Path) -> None:
    first = backup_path(repo, source)
    with open(source, "r+b") as f:
        f.seek(9 * MiB)
        f.write(os.urandom(1000))
    second = backup_path(repo, source)
    assert second.manifest["parent"] == first.id
    assert second.manifest["stats"]["new_chunks"] == 1
    assert second.stored <= repo.block_size + 4096
    out = tmp_path / "first.img"
    restore_snapshot(repo, first, out)
    out2 = tmp_path / "second.img"
    restore_snapshot(repo, second, out2)
    assert out2.read_bytes() == source.read_bytes()
    assert out.read_bytes() != out2.read_bytes()
    assert verify(repo, read_data=True).ok


def test_blocks_that_moved_since_the_parent_are_not_stored_again(
    repo: Repository, tmp_path: Path
) -> None:
    # Only a block at the same position as in the parent skips the lookup; moved blocks
    # are found in the store instead.
    a, b = os.urandom(repo.block_size), os.urandom(repo.block_size)
    path = tmp_path / "moved.img"
    path.write_bytes(a + b)
    backup_path(repo, path)
    path.write_bytes(b + a)
    moved = backup_path(repo, path)
    assert moved.manifest["stats"]["new_chunks"] == 0
    assert moved.manifest["stats"]["dedup_bytes"] == 2 * repo.block_size
    assert len(chunk_files(repo)) == 2
    out = tmp_path / "out.img"
    restore_snapshot(repo, moved, out)
    assert out.read_bytes() == b + a


def test_duplicate_blocks_within_one_backup_are_stored_once(
    repo: Repository, tmp_path: Path
) -> None:
    block = os.urandom(repo.block_size)
    path = tmp_path / "dups.img"
    path.write_bytes(block * 6)
    snapshot = backup_path(repo, path, options=BackupOptions(workers=4))
    assert len(chunk_files(repo)) == 1
    assert snapshot.manifest["stats"]["dedup_bytes"] == 5 * repo.block_size


def test_used_map_skips_unused_blocks_and_keeps_partly_used_ones_whole(
    repo: Repository, tmp_path: Path
) -> None:
    path = tmp_path / "fs.img"
    path.write_bytes(os.urandom(12 * MiB))
    # Mapped in 4 MiB blocks, as a plan made before the repository was known may be: the
    # backup maps it again in the repository's blocks.
    bs = repo.block_size
    used = UsedMap.from_ranges(12 * MiB, 4 * MiB, [(0, 4 * MiB), (8 * MiB, 8192)])
    image = ImageSource("data", str(path), 0, 12 * MiB, used, {"method": "test"})
    plan = BackupPlan("fs.img", "file:fs", "file", 12 * MiB, [image])
    snapshot = run_backup(repo, plan)
    ids = repo.load_index(snapshot, "data")
    assert ids[4 * MiB // bs] == codec.UNUSED_ID
    assert snapshot.manifest["stats"]["read"] == 4 * MiB + bs
    out = tmp_path / "out.img"
    restore_snapshot(repo, snapshot, out)
    data, original = out.read_bytes(), path.read_bytes()
    assert data[: 4 * MiB] == original[: 4 * MiB]
    # the free bytes of a used block, as they were
    assert data[8 * MiB : 8 * MiB + bs] == original[8 * MiB : 8 * MiB + bs]
    assert snapshot.image("data").used == 4 * MiB + 8192
    # A file deleted inside the partly used block frees bytes but changes none: the block
    # is the same chunk, and the next backup adds nothing for it.
    fewer = UsedMap.from_ranges(12 * MiB, bs, [(0, 4 * MiB), (8 * MiB, 4096)])
    image = ImageSource("data", str(path), 0, 12 * MiB, fewer, {"method": "test"})
    again = run_backup(repo, BackupPlan("fs.img", "file:fs", "file", 12 * MiB, [image]))
    assert repo.load_index(again, "data") == ids
    assert again.stored == 0


def test_cancel_leaves_no_snapshot(
    repo: Repository, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancel = threading.Event()
    write_chunk = repo.write_chunk

    def write_then_cancel(chunk_id: bytes, data: bytes) -> bool:
        cancel.set()  # the person presses Cancel after the first chunk is stored
        return write_chunk(chunk_id, data)

    monkeypatch.setattr(repo, "write_chunk", write_then_cancel)
    with pytest.raises(Cancelled):
        backup_path(repo, source, options=BackupOptions(cancel=cancel, workers=1))
    assert repo.snapshots() == []
    assert list((repo.path / "indexes").iterdir()) == []
    assert verify(repo).ok
    monkeypatch.undo()
    kept = {p.name for p in chunk_files(repo)}
    # The chunks the source needs (its distinct non-zero blocks, by id) and their lengths;
    # workers=1 keeps at most 3 reads of 4 blocks in flight when the cancel comes.
    data, bs = source.read_bytes(), repo.block_size
    blocks = [data[i : i + bs] for i in range(0, len(data), bs)]
    lengths = {repo.keys.chunk_id(b).hex(): len(b) for b in blocks if b.count(0) != len(b)}
    nonzero = sum(len(b) for b in blocks if b.count(0) != len(b))
    assert 0 < len(kept) < len(lengths), "the cancel did not cut the backup short"
    assert kept < lengths.keys()
    again = backup_path(repo, source)  # resumes: the chunks the cancelled run stored are reused
    stats = again.manifest["stats"]
    new = lengths.keys() - kept
    assert stats["new_chunks"] == len(new)
    assert stats["dedup_bytes"] == nonzero - sum(lengths[c] for c in new)
    assert {p.name for p in chunk_files(repo)} == lengths.keys()
    out = source.with_suffix(".restored")
    restore_snapshot(repo, again, out)
    assert out.read_bytes() == data


def flip_byte(path: Path, offset: int = 40) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


def ranges_of_chunk(repo: Repository, snapshot: Snapshot, chunk: str) -> list[tuple[int, int]]:
    """``(start, length)`` of every block of the snapshot's image that is chunk ``chunk``."""
    ids = repo.load_index(snapshot, "data")
    bs, size = repo.block_size, snapshot.size
    starts = [block * bs for block, chunk_id in enumerate(ids) if chunk_id.hex() == chunk]
    return [(start, min(bs, size - start)) for start in starts]


def assert_zeros_exactly_at(out: Path, source: Path, ranges: list[tuple[int, int]]) -> None:
    """``out`` holds zeros in ``ranges`` and the bytes of ``source`` everywhere else."""
    restored, original = out.read_bytes(), source.read_bytes()
    assert len(restored) == len(original)
    assert ranges, "no damaged range to check"
    expected = bytearray(original)
    for start, length in ranges:
        assert original[start : start + length] != bytes(length)  # zeros there are visible
        expected[start : start + length] = bytes(length)
    step = 64 * 1024  # compare in pieces: a failure names offsets, not 37 MiB of bytes
    wrong = [
        i for i in range(0, len(expected), step) if restored[i : i + step] != expected[i : i + step]
    ]
    assert wrong == [], f"restored bytes differ at offsets {wrong[:8]}"


def test_bit_rot_in_a_chunk_is_found_and_named(
    repo: Repository, source: Path, tmp_path: Path
) -> None:
    snapshot = backup_path(repo, source)
    victim = chunk_files(repo)[0]
    flip_byte(victim)
    assert verify(repo).ok  # structure alone cannot see it
    report = verify(repo, read_data=True)
    assert not report.ok
    (damage,) = report.damage
    assert victim.name in damage.what
    assert "bit rot" in damage.reason
    assert snapshot.id[:12] in damage.affects[0] and "bytes" in damage.affects[0]
    with pytest.raises(IntegrityError, match=victim.name):
        restore_snapshot(repo, snapshot, tmp_path / "out.img")
    result = restore_snapshot(
        repo, snapshot, tmp_path / "out2.img", options=RestoreOptions(ignore_damage=True)
    )
    ranges = ranges_of_chunk(repo, snapshot, victim.name)
    assert len(ranges) == len(damage.affects)
    assert sorted((d.start, d.length) for d in result.damaged) == ranges
    assert all(d.image == "data" and victim.name in d.reason for d in result.damaged)
    assert_zeros_exactly_at(tmp_path / "out2.img", source, ranges)


@pytest.mark.integration
def test_ignore_damage_writes_zeros_over_a_disks_old_content(
    repo: Repository, source: Path, tmp_path: Path
) -> None:
    """On a disk the zeros must be written: skipping a damaged block would leave the disk's
    old bytes there (a file target is emptied first, so it cannot show this)."""
    snapshot = backup_path(repo, source)
    victim = chunk_files(repo)[0]
    flip_byte(victim)
    ranges = ranges_of_chunk(repo, snapshot, victim.name)
    size = source.stat().st_size
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xa5" * (size + MiB - size % 512))  # loop devices count sectors
    with loop_device(disk) as dev:
        result = restore_images(
            repo,
            snapshot,
            [ImageTarget("data", dev)],
            options=RestoreOptions(ignore_damage=True),
        )
    assert result.verified
    assert sorted((d.start, d.length) for d in result.damaged) == ranges
    with open(disk, "r+b") as f:
        f.seek(size)
        assert set(f.read()) == {0xA5}  # nothing written past the image
        f.truncate(size)
    assert_zeros_exactly_at(disk, source, ranges)


def test_missing_chunk_and_damaged_index(repo: Repository, source: Path) -> None:
    snapshot = backup_path(repo, source)
    chunk_files(repo)[0].unlink()
    report = verify(repo)
    assert [d.reason for d in report.damage] == ["missing"]
    index = repo.index_path(snapshot.id, "data")
    flip_byte(index, 50)
    report = verify(repo)
    assert "index" in report.damage[0].what and "damaged" in report.damage[0].reason


def test_damaged_manifest_is_reported(repo: Repository, source: Path) -> None:
    snapshot = backup_path(repo, source)
    flip_byte(repo.path / "snapshots" / f"{snapshot.id}.snap", 30)
    report = verify(repo)
    assert not report.ok
    assert snapshot.id in report.damage[0].what


def test_time_boxed_verify_resumes(repo: Repository, source: Path) -> None:
    backup_path(repo, source)
    total = len(chunk_files(repo))
    first = verify(repo, read_data=True, max_time=0)
    assert not first.complete and first.checked >= 1
    checked = first.checked
    while True:
        report = verify(repo, read_data=True, max_time=0)
        assert report.resumed
        checked += report.checked
        if report.complete:
            break
    assert checked == total
    assert not (repo.path / "verify" / "state.json").exists()


def test_holes_of_a_sparse_file_are_not_read(repo: Repository, tmp_path: Path) -> None:
    path = tmp_path / "huge.img"
    with open(path, "wb") as f:
        f.truncate(1 << 40)  # 1 TiB, nearly all hole
        f.seek(123 * MiB)
        f.write(os.urandom(MiB))
    snapshot = backup_path(repo, path)
    st = snapshot.manifest["stats"]
    assert st["read"] <= 2 * repo.block_size  # the blocks around the data, nothing else
    assert st["zero_bytes"] >= (1 << 40) - 2 * repo.block_size
    ids = repo.load_index(snapshot, "data")
    assert len(ids) == (1 << 40) // repo.block_size
    out = tmp_path / "out.img"
    restore_snapshot(repo, snapshot, out)
    with open(out, "rb") as a, open(path, "rb") as b:
        a.seek(120 * MiB)
        b.seek(120 * MiB)
        assert a.read(8 * MiB) == b.read(8 * MiB)


def test_keyless_verify_finds_bit_rot_without_the_passphrase(
    repo: Repository, source: Path
) -> None:
    from imaging.repository.verify import verify_keyless

    snapshot = backup_path(repo, source)
    assert verify_keyless(repo.path).ok
    flip_byte(chunk_files(repo)[1], 100)
    flip_byte(repo.index_path(snapshot.id, "data"), 60)
    report = verify_keyless(repo.path)
    assert len(report.damage) == 2
    assert any("indexes" in d.what for d in report.damage)


def test_an_unreadable_parent_index_only_costs_the_lookups(
    repo: Repository, source: Path, tmp_path: Path
) -> None:
    """The next backup takes the parent's chunks as stored from its index; a damaged index
    means each chunk is looked up instead, and the backup is whole."""
    first = backup_path(repo, source)
    flip_byte(repo.index_path(first.id, "data"), 50)
    second = backup_path(repo, source)
    assert second.manifest["parent"] == first.id
    assert second.manifest["stats"]["new_chunks"] == 0  # found by lookup, not stored again
    out = tmp_path / "second.img"
    restore_snapshot(repo, second, out)
    assert out.read_bytes() == source.read_bytes()


def test_a_chunk_lost_after_the_parent_is_named_by_verify(repo: Repository, source: Path) -> None:
    """The trade the parent's index buys (docs/FORMAT.md, write order): a chunk file lost
    since the parent is referenced again, not rewritten; verify names it in both."""
    first = backup_path(repo, source)
    chunk_files(repo)[0].unlink()
    second = backup_path(repo, source)
    assert second.manifest["stats"]["new_chunks"] == 0
    report = verify(repo)
    assert [d.reason for d in report.damage] == ["missing"]
    broken = " ".join(report.damage[0].affects)
    assert f"snapshot {first.id[:12]}" in broken and f"snapshot {second.id[:12]}" in broken
