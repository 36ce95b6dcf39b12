"""A backup killed with SIGKILL at any moment leaves no snapshot and a sound repository."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imaging.backup import backup_path
from imaging.repository.store import Repository
from imaging.repository.verify import verify
from imaging.restore import restore_snapshot
from tests.conftest import PASSPHRASE
from tests.support import MiB, write_random_image

KILLS = 5  # the fault suite (tests/faults) does 20


@pytest.mark.slow
def test_sigkill_during_backup(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", passphrase=PASSPHRASE)
    source = tmp_path / "source.img"
    write_random_image(source, 160 * MiB, zero_every=5)
    env = {**os.environ, "HOURGLASS_PASSPHRASE": PASSPHRASE}
    rng = random.Random(7)
    for _ in range(KILLS):
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "imaging.cli.main",
                "backup",
                "--repo",
                str(repo.path),
                str(source),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 2.0))
        child.send_signal(signal.SIGKILL)
        child.wait()
        repo = Repository.open(repo.path, PASSPHRASE)
        for snapshot in repo.snapshots():  # any snapshot listed must be complete
            assert snapshot.size == source.stat().st_size
        report = verify(repo, read_data=True)
        assert report.ok, [d.describe() for d in report.damage]
    stored_before = sum(1 for _ in repo.iter_chunk_files())
    final = backup_path(repo, source)
    if stored_before:
        assert final.manifest["stats"]["dedup_bytes"] > 0  # resumed from the killed runs
    out = tmp_path / "restored.img"
    restore_snapshot(repo, final, out)
    assert out.read_bytes() == source.read_bytes()
