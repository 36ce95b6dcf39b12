"""Kills, concurrent writers, gc and forget racing backups and restores."""

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
from imaging.repository import gc, leases
from imaging.repository.store import Repository
from imaging.repository.verify import verify
from tests.conftest import PASSPHRASE
from tests.support import MiB, write_random_image

pytestmark = [pytest.mark.faults, pytest.mark.slow]

KILLS = 20


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "imaging.cli.main", *argv]


def kill_moments(span: float, rng: random.Random) -> list[float]:
    """KILLS moments spread evenly over 2 % to 80 % of ``span`` (one backup's measured time),
    in a random order: the earliest land well before the commit at the end of a backup even
    when a run is several times faster than the measured one, so some kills must land
    before the commit whatever the load. How many do is timing, not a property of the engine:
    it is printed, and only "at least one" is asserted."""
    moments = [span * (0.02 + 0.78 * i / (KILLS - 1)) for i in range(KILLS)]
    rng.shuffle(moments)
    return moments


def test_sigkill_at_twenty_random_moments(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", passphrase=PASSPHRASE)
    source = tmp_path / "source.img"
    write_random_image(source, 96 * MiB, zero_every=4)
    env = {**os.environ, "HOURGLASS_PASSPHRASE": PASSPHRASE}
    rng = random.Random(2026)

    def change_source() -> None:
        # Every run gets new chunks to write.
        with open(source, "r+b") as f:
            f.seek(rng.randrange(0, 64) * MiB)
            f.write(os.urandom(32 * MiB))

    # How long does one such backup take here? Kills land within that span.
    change_source()
    started = time.monotonic()
    subprocess.run(
        cli("backup", "--repo", str(repo.path), str(source)),
        env=env,
        check=True,
        capture_output=True,
    )
    span = time.monotonic() - started
    outcomes = {"killed before commit": 0, "finished before the kill": 0}
    for round_, moment in enumerate(kill_moments(span, rng)):
        change_source()
        before = set(repo.snapshot_ids())
        child = subprocess.Popen(
            cli("backup", "--repo", str(repo.path), str(source)),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(moment)
        child.send_signal(signal.SIGKILL)
        code = child.wait()
        repo = Repository.open(repo.path, PASSPHRASE)
        new = set(repo.snapshot_ids()) - before
        outcomes["finished before the kill" if new else "killed before commit"] += 1
        assert code in (0, -signal.SIGKILL), round_
        # no snapshot and exit code 0 would be a failure reported as success
        assert new or code == -signal.SIGKILL, f"round {round_}: exit 0 and no snapshot"
        for snapshot_id in new:  # a listed snapshot must restore identically
            snapshot = repo.load_snapshot(snapshot_id)
            out = tmp_path / "check.img"
            restore_snapshot(repo, snapshot, out)
            assert out.read_bytes() == source.read_bytes(), round_
        report = verify(repo, read_data=True)
        assert report.ok, [d.describe() for d in report.damage]
    print(f"{KILLS} SIGKILLs over {span:.2f} s backups: {outcomes}")
    assert outcomes["killed before commit"] >= 1, outcomes
    final = backup_path(repo, source)
    out = tmp_path / "final.img"
    restore_snapshot(repo, final, out)
    assert out.read_bytes() == source.read_bytes()


def test_two_backups_at_once(tmp_path: Path) -> None:
    repo_path = tmp_path / "repo"
    Repository.init(repo_path, passphrase=PASSPHRASE)
    sources = []
    for i in range(2):
        path = tmp_path / f"s{i}.img"
        write_random_image(path, 64 * MiB, seed=i, zero_every=0)
        sources.append(path)
    shared = os.urandom(8 * MiB)  # both write these blocks at the same time
    for path in sources:
        with open(path, "r+b") as f:
            f.write(shared)
    env = {**os.environ, "HOURGLASS_PASSPHRASE": PASSPHRASE}
    children = [
        subprocess.Popen(cli("backup", "--repo", str(repo_path), str(p)), env=env) for p in sources
    ]
    assert [c.wait() for c in children] == [0, 0]
    repo = Repository.open(repo_path, PASSPHRASE)
    snapshots = repo.snapshots()
    assert len(snapshots) == 2
    for snapshot in snapshots:
        out = tmp_path / "out.img"
        restore_snapshot(repo, snapshot, out)
        assert out.read_bytes() == Path(snapshot.source).read_bytes()
    assert verify(repo, read_data=True).ok


def test_gc_while_a_backup_runs(tmp_path: Path) -> None:
    """gc runs while a real backup process holds its writer lease (stopped with SIGSTOP once it
    reports progress, so the moment is certain): the trash batch waits for that lease, the
    backup deduplicates against chunks it found before gc moved them, and the next gc brings
    those back. Any gc error fails the test (it runs in this thread)."""
    repo = Repository.init(tmp_path / "repo", passphrase=PASSPHRASE)
    source = tmp_path / "s.img"
    write_random_image(source, 128 * MiB, zero_every=0)
    old = backup_path(repo, source)
    repo.delete_snapshot(old.id)  # its chunks are now garbage, but the next backup needs them
    for entry in repo.iter_chunk_files():
        os.utime(entry.path, (time.time() - 7200, time.time() - 7200))
    chunks = sum(1 for _ in repo.iter_chunk_files())
    env = {**os.environ, "HOURGLASS_PASSPHRASE": PASSPHRASE}
    argv = cli("backup", "--repo", str(repo.path), str(source), "--progress", "json")
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert child.stderr is not None
    try:
        first_event = child.stderr.readline()  # it has looked chunks up already
        child.send_signal(signal.SIGSTOP)
        assert b'"phase": "backup"' in first_event, first_event
        writers = leases.live_leases(repo.path / "leases", ("writer",))
        assert len(writers) == 1
        during = gc.collect(repo)
        assert 0 < during.trashed <= chunks and during.freed == 0, during
        assert during.waiting_batches == 1 and writers[0].name in during.waited_for, during
    finally:
        child.send_signal(signal.SIGCONT)
    child.stderr.read()
    assert child.wait() == 0
    (snapshot,) = repo.snapshots()
    stats = snapshot.manifest["stats"]
    # What it found before gc moved the chunks is not written again; the rest is.
    assert stats["dedup_bytes"] > 0 and stats["new_chunks"] < chunks, stats
    after = gc.collect(repo)
    assert after.waiting_batches == 0 and after.restored > 0, after
    assert after.restored + stats["new_chunks"] >= chunks - after.freed
    assert verify(repo, read_data=True).ok
    out = tmp_path / "out.img"
    restore_snapshot(repo, snapshot, out)
    assert out.read_bytes() == source.read_bytes()


def test_forget_and_gc_while_a_restore_runs(tmp_path: Path) -> None:
    """A restore of a snapshot forgotten while it runs: the trash waits for its reader lease
    (the restore is stopped with SIGSTOP during gc, so the lease is certainly live)."""
    repo = Repository.init(tmp_path / "repo", passphrase=PASSPHRASE)
    source = tmp_path / "s.img"
    write_random_image(source, 160 * MiB, zero_every=0)
    snapshot = backup_path(repo, source)
    out = tmp_path / "out.img"
    env = {**os.environ, "HOURGLASS_PASSPHRASE": PASSPHRASE}
    argv = cli("restore", "--repo", str(repo.path), snapshot.id, str(out), "--yes")
    child = subprocess.Popen([*argv, "--progress", "json"], env=env, stderr=subprocess.PIPE)
    assert child.stderr is not None
    try:
        first_event = child.stderr.readline()  # the restore is writing blocks now
        child.send_signal(signal.SIGSTOP)
        assert b'"phase": "restore"' in first_event, first_event
        readers = {lease.name for lease in leases.live_leases(repo.path / "leases", ("reader",))}
        assert readers
        repo.delete_snapshot(snapshot.id)
        for entry in repo.iter_chunk_files():
            os.utime(entry.path, (time.time() - 7200, time.time() - 7200))
        during = gc.collect(repo)
        assert during.trashed > 0 and during.freed == 0, during
        assert during.waiting_batches == 1 and readers <= during.waited_for, during
    finally:
        child.send_signal(signal.SIGCONT)
    child.stderr.read()
    assert child.wait() == 0  # it read the trashed chunks from trash/
    assert out.read_bytes() == source.read_bytes()
    after = gc.collect(repo)
    assert after.freed == during.trashed and after.restored == 0, after
    assert sum(1 for _ in repo.iter_chunk_files()) == 0
