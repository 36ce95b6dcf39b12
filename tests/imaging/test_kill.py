"""A backup killed with SIGKILL at any moment leaves no partial snapshot and a sound
repository; what did commit restores, and the next backup resumes from what was stored.

The fault suite (tests/faults/test_kills_and_concurrency.py) does 20 kills timed from a
measured backup; this quicker test adds the resume check: the backup after the kills
stores exactly the chunks the killed runs had not made durable.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imaging.image.backup import backup_path
from imaging.image.restore import restore_snapshot
from imaging.repository.store import Repository
from imaging.repository.verify import verify
from tests.conftest import PASSPHRASE
from tests.support import MiB, write_random_image

KILLS = 6


def needed_chunks(repo: Repository, source: Path) -> set[str]:
    """The ids of the source's distinct non-zero blocks: what a snapshot of it needs."""
    data, bs = source.read_bytes(), repo.block_size
    blocks = (data[i : i + bs] for i in range(0, len(data), bs))
    return {repo.keys.chunk_id(b).hex() for b in blocks if b.count(0) != len(b)}


def chunk_names(repo: Repository) -> set[str]:
    return {os.path.basename(e.path) for e in repo.iter_chunk_files()}


def kill_backup(repo: Repository, source: Path, *, after: float | None) -> int:
    """Start `hourglass backup` and SIGKILL it ``after`` seconds in, or (None) as soon as
    its first batch of chunks is durable: then the kill lands before the commit, however
    loaded the machine, since the rest of the chunks, the index and the manifest follow."""
    child = subprocess.Popen(
        [sys.executable, "-m", "imaging.cli.main", "backup", "--repo", str(repo.path), str(source)],
        env={**os.environ, "HOURGLASS_PASSPHRASE": PASSPHRASE},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if after is not None:
        time.sleep(after)
    else:
        before = chunk_names(repo)
        while child.poll() is None and chunk_names(repo) <= before:
            time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    return child.wait()


@pytest.mark.slow
def test_sigkill_during_backup(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", passphrase=PASSPHRASE)
    source = tmp_path / "source.img"
    rng = random.Random(7)
    outcomes = {"killed before commit": 0, "finished before the kill": 0}
    for round_ in range(KILLS):
        write_random_image(source, 192 * MiB, seed=round_, zero_every=5)  # new data each round
        before = set(repo.snapshot_ids())
        on_first_batch = round_ % 2 == 0
        code = kill_backup(repo, source, after=None if on_first_batch else rng.uniform(0.2, 2.0))
        assert code in (0, -signal.SIGKILL), round_
        repo = Repository.open(repo.path, PASSPHRASE)
        report = verify(repo, read_data=True)
        assert report.ok, [d.describe() for d in report.damage]
        new = set(repo.snapshot_ids()) - before
        outcomes["finished before the kill" if new else "killed before commit"] += 1
        if on_first_batch:
            assert not new, f"round {round_}: the kill came after the commit"
        for snapshot_id in new:  # it finished before the kill: it is this round's source
            out = tmp_path / "check.img"
            restore_snapshot(repo, repo.load_snapshot(snapshot_id), out)
            assert out.read_bytes() == source.read_bytes(), round_
        if not new:
            # The next backup resumes: it stores exactly what the killed run had not.
            needed = needed_chunks(repo, source)
            missing = needed - chunk_names(repo)
            if on_first_batch:
                assert len(missing) < len(needed), "no chunk was durable before the kill"
            resumed = backup_path(repo, source)
            assert resumed.manifest["stats"]["new_chunks"] == len(missing), round_
            out = tmp_path / "resumed.img"
            restore_snapshot(repo, resumed, out)
            assert out.read_bytes() == source.read_bytes(), round_
    print(f"{KILLS} SIGKILLs: {outcomes}")
