"""forget and gc: space comes back, and nothing a running backup needs goes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from imaging.errors import Busy
from imaging.image.backup import backup_path
from imaging.image.restore import restore_snapshot
from imaging.repository import gc, leases
from imaging.repository.store import Repository
from imaging.repository.verify import verify


def write(path: Path, blocks: list[bytes]) -> Path:
    path.write_bytes(b"".join(blocks))
    return path


def chunk_count(repo: Repository) -> int:
    return sum(1 for _ in repo.iter_chunk_files())


def test_forget_then_gc_frees_unshared_chunks(repo: Repository, tmp_path: Path) -> None:
    a, b, c = (os.urandom(repo.block_size) for _ in range(3))
    first = backup_path(repo, write(tmp_path / "s.img", [a, b]))
    second = backup_path(repo, write(tmp_path / "s.img", [a, c]))
    assert chunk_count(repo) == 3
    repo.delete_snapshot(first.id)
    result = gc.collect(repo)
    assert result.freed == 1 and result.freed_bytes > repo.block_size
    assert chunk_count(repo) == 2
    assert verify(repo, read_data=True).ok
    restore_snapshot(repo, second, tmp_path / "out.img")
    assert (tmp_path / "out.img").read_bytes() == a + c
    assert list((repo.path / "trash").iterdir()) == []


def test_gc_reclaims_a_killed_backup(repo: Repository, tmp_path: Path) -> None:
    data = os.urandom(repo.block_size)
    chunk_id = repo.keys.chunk_id(data)
    repo.write_chunk(chunk_id, repo.encode_chunk(chunk_id, data))
    repo.commit_chunks()  # stored; the snapshot that needed it never committed
    (repo.path / "indexes" / ("ab" * 16)).mkdir()
    result = gc.collect(repo)
    assert result.freed == 1 and result.orphan_indexes == 1
    assert chunk_count(repo) == 0


def fake_lease(repo: Repository, kind: str, started: float) -> Path:
    """A lease of a live process (this one) that started at ``started``."""
    path = repo.path / "leases" / f"{kind}-test.json"
    record = {
        "kind": kind,
        "host": os.uname().nodename,
        "pid": os.getpid(),
        "boot_id": leases.boot_id(),
        "started": started,
        "heartbeat": time.time(),
    }
    path.write_text(json.dumps(record))
    return path


def test_running_backup_keeps_its_new_chunks(repo: Repository) -> None:
    lease = fake_lease(repo, "writer", time.time() - 1)
    data = os.urandom(repo.block_size)
    chunk_id = repo.keys.chunk_id(data)
    repo.write_chunk(chunk_id, repo.encode_chunk(chunk_id, data))  # written by that backup
    repo.commit_chunks()
    result = gc.collect(repo)
    assert result.trashed == 0 and repo.has_chunk(chunk_id)
    lease.unlink()
    assert gc.collect(repo).freed == 1


def age_chunks(repo: Repository, seconds: float) -> None:
    for entry in repo.iter_chunk_files():
        os.utime(entry.path, (time.time() - seconds, time.time() - seconds))


# A batch waiting for a real backup that found its chunks before gc moved them (a paused
# backup holding its real lease): tests/faults/test_gc_races.py and
# tests/faults/test_kills_and_concurrency.py::test_gc_while_a_backup_runs.


def test_backup_after_trash_writes_the_chunk_again(repo: Repository, tmp_path: Path) -> None:
    x = os.urandom(repo.block_size)
    old = backup_path(repo, write(tmp_path / "s.img", [x]))
    repo.delete_snapshot(old.id)
    age_chunks(repo, 3600)
    reader = fake_lease(repo, "reader", time.time() - 10)
    assert gc.collect(repo).waiting_batches == 1
    new = backup_path(repo, write(tmp_path / "s2.img", [x]))
    assert new.manifest["stats"]["new_chunks"] == 1  # it did not trust the trashed copy
    reader.unlink()
    result = gc.collect(repo)
    assert result.freed + result.restored == 1
    assert verify(repo, read_data=True).ok


def test_restore_reads_a_trashed_chunk(repo: Repository, tmp_path: Path) -> None:
    x = os.urandom(repo.block_size)
    snap = backup_path(repo, write(tmp_path / "s.img", [x]))
    (chunk,) = [Path(e.path) for e in repo.iter_chunk_files()]
    batch = repo.path / "trash" / "1-1" / chunk.parent.parent.name / chunk.parent.name
    batch.mkdir(parents=True)
    chunk.rename(batch / chunk.name)
    restore_snapshot(repo, snap, tmp_path / "out.img")
    assert (tmp_path / "out.img").read_bytes() == x


def test_only_one_gc(repo: Repository) -> None:
    with leases.hold_gc(repo.path / "leases"), pytest.raises(Busy, match="already running"):
        gc.collect(repo)


def test_stale_gc_lease_is_taken_over(repo: Repository, tmp_path: Path) -> None:
    """A gc lock left by a dead process (its pid is gone) does not block gc for good."""
    old = backup_path(repo, write(tmp_path / "s.img", [os.urandom(repo.block_size)]))
    repo.delete_snapshot(old.id)
    lock = repo.path / "leases" / leases.GC_LOCK
    lock.write_text(
        json.dumps(
            {
                "kind": "gc",
                "host": os.uname().nodename,
                "pid": 2**22 - 7,
                "boot_id": leases.boot_id(),
                "started": 0,
                "heartbeat": 0,
            }
        )
    )
    result = gc.collect(repo)
    assert result.freed == 1 and chunk_count(repo) == 0
    assert not lock.exists()  # released, not left behind as ours


def test_a_live_empty_gc_lock_is_busy_and_a_stale_one_is_taken_over(repo: Repository) -> None:
    """On a full drive gc's lock is an empty file whose mtime is its heartbeat."""
    lock = repo.path / "leases" / leases.GC_LOCK
    lock.touch()
    with pytest.raises(Busy, match="already running"):
        gc.collect(repo)
    old = time.time() - leases.STALE_AFTER - 60
    os.utime(lock, (old, old))
    gc.collect(repo)
    assert not lock.exists()


def test_gc_refuses_when_a_manifest_is_unreadable(repo: Repository, tmp_path: Path) -> None:
    snap = backup_path(repo, write(tmp_path / "s.img", [os.urandom(repo.block_size)]))
    path = repo.path / "snapshots" / f"{snap.id}.snap"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # one flipped bit, always a change
    path.write_bytes(bytes(data))
    with pytest.raises(Exception, match="cannot be read"):
        gc.collect(repo)
    assert chunk_count(repo) == 1


def test_gc_reports_its_phases(repo: Repository, tmp_path: Path) -> None:
    """The app shows gc's progress (issue 22, item 4): the mark counts images, the sweep
    the chunks it looked at, and each phase ends with a finished event."""
    from imaging import jobs
    from imaging.progress import Progress

    a, b = os.urandom(repo.block_size), os.urandom(repo.block_size)
    first = backup_path(repo, write(tmp_path / "s.img", [a, b]))
    backup_path(repo, write(tmp_path / "s.img", [a]))
    repo.delete_snapshot(first.id)
    events: list[Progress] = []
    result = jobs.gc(repo, progress=events.append)
    assert result.freed == 1
    finished = {e.phase: e for e in events if e.finished}
    assert set(finished) == {"gc-mark", "gc-sweep"}
    assert finished["gc-mark"].done == finished["gc-mark"].total == 1  # one image left
    assert finished["gc-sweep"].done == finished["gc-sweep"].total == 2  # a and b looked at
