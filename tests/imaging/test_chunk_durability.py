"""New chunks become durable in batches: written to tmp/, one syncfs, then renamed. A chunk
file under its final name is always complete; nothing pending is left behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from imaging.image.backup import backup_path
from imaging.repository import codec, storage
from imaging.repository.fsutil import SYNCFS_FILESYSTEMS, filesystem_type
from imaging.repository.store import Repository
from tests.support import MiB


def encoded(repo: Repository, data: bytes) -> tuple[bytes, bytes]:
    chunk_id = repo.keys.chunk_id(data)
    return chunk_id, repo.encode_chunk(chunk_id, data)


def tmp_files(repo: Repository) -> list[str]:
    return sorted(os.listdir(repo.path / "tmp"))


def test_the_filesystem_type_is_the_one_findmnt_names(tmp_path: Path) -> None:
    findmnt = subprocess.run(
        ["findmnt", "-no", "FSTYPE", "-T", str(tmp_path)], capture_output=True, text=True
    )
    assert filesystem_type(tmp_path) == findmnt.stdout.strip()
    assert filesystem_type(Path("/proc/self")) == "proc"
    assert "proc" not in SYNCFS_FILESYSTEMS


def test_a_chunk_gets_its_name_only_when_committed(repo: Repository) -> None:
    if not repo.local_store.batched:
        pytest.skip(f"{filesystem_type(repo.path)} gets one fdatasync per chunk")
    data = os.urandom(100_000)
    chunk_id, blob = encoded(repo, data)
    assert repo.write_chunk(chunk_id, blob)
    assert not repo.has_chunk(chunk_id)
    assert len(tmp_files(repo)) == 1
    repo.commit_chunks()
    assert repo.has_chunk(chunk_id)
    assert tmp_files(repo) == []
    assert repo.read_chunk(chunk_id) == data


def test_a_full_batch_commits_itself(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without batching every chunk is named at once and this would prove nothing.
    if filesystem_type(repo.path) not in SYNCFS_FILESYSTEMS:
        pytest.skip(f"{filesystem_type(repo.path)} gets one fdatasync per chunk")
    assert repo.local_store.batched
    monkeypatch.setattr(storage, "SYNC_BATCH_BYTES", 150_000)
    first, second = encoded(repo, os.urandom(100_000)), encoded(repo, os.urandom(100_000))
    repo.write_chunk(*first)
    assert not repo.has_chunk(first[0]) and len(tmp_files(repo)) == 1  # pending
    repo.write_chunk(*second)  # 200,000 bytes pending: over the batch size
    assert repo.has_chunk(first[0]) and repo.has_chunk(second[0])
    assert tmp_files(repo) == []


def test_discarded_chunks_leave_nothing(repo: Repository) -> None:
    chunk_id, blob = encoded(repo, os.urandom(50_000))
    repo.write_chunk(chunk_id, blob)
    repo.discard_chunks()
    assert tmp_files(repo) == []
    if repo.local_store.batched:
        assert not repo.has_chunk(chunk_id)


def test_a_backup_leaves_every_chunk_named_and_tmp_empty(repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "source.img"
    with open(source, "wb") as f:  # more than one batch of 64 MiB, incompressible
        for _ in range(25):
            f.write(os.urandom(4 * MiB))
    snapshot = backup_path(repo, source)
    assert tmp_files(repo) == []
    ids = repo.load_index(snapshot, "data")
    stored = set(ids) - set(codec.RESERVED_IDS)
    assert len(stored) == 100 * MiB // repo.block_size  # more than one batch's worth
    assert all(repo.has_chunk(chunk_id) for chunk_id in stored)
