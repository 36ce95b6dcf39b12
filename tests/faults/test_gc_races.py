"""gc racing backups: no interleaving may remove a chunk that a committed snapshot references.

Two kinds of test. The first replays the hardening issue's commands with real `hourglass`
processes at many delays, in both orders. The second pauses a real backup at chosen points
(through its progress callback, while it holds its real lease) and runs a real gc then, so
that each interleaving happens for certain rather than by luck of timing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from imaging.image.backup import backup_path
from imaging.image.restore import restore_snapshot
from imaging.progress import Progress
from imaging.repository import gc, leases
from imaging.repository.storage import LocalStore
from imaging.repository.store import Repository
from imaging.repository.verify import verify
from tests.conftest import PASSPHRASE
from tests.support import MiB

pytestmark = [pytest.mark.faults]

BLOCK = 256 * 1024


def cli(*argv: str | Path) -> list[str]:
    return [sys.executable, "-m", "imaging.cli.main", *map(str, argv)]


ENV = {**os.environ, "HOURGLASS_PASSPHRASE": PASSPHRASE}


def random_image(path: Path, size: int, seed: int) -> Path:
    import random

    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def changed_copy(src: Path, dest: Path, every: int, seed: int) -> Path:
    """``src`` with one block in ``every`` replaced: it shares the rest with ``src``."""
    import random

    rng = random.Random(seed)
    data = bytearray(src.read_bytes())
    for offset in range(0, len(data), BLOCK * every):
        data[offset : offset + BLOCK] = rng.randbytes(BLOCK)
    dest.write_bytes(bytes(data))
    return dest


def check_repository(repo_path: Path, expected: Path, label: str) -> None:
    """verify reads every chunk, the latest snapshot restores byte for byte, and the next
    incremental (which trusts its parent) still verifies."""
    run = subprocess.run(
        cli("verify", "--repo", repo_path, "--read-data"), env=ENV, capture_output=True, text=True
    )
    assert run.returncode == 0, f"{label}: verify: {run.stdout}{run.stderr}"
    out = repo_path.parent / "out.img"
    run = subprocess.run(
        cli("restore", "--yes", "--repo", repo_path, "latest", out),
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, f"{label}: restore: {run.stderr}"
    assert out.read_bytes() == expected.read_bytes(), label
    out.unlink()


@pytest.mark.slow
def test_gc_and_a_backup_at_many_delays_in_both_orders(tmp_path: Path) -> None:
    """The issue's commands: backup, forget latest, then gc and another backup of data that
    shares most blocks with the forgotten one, started at delays from 0 to gc's length."""
    src = random_image(tmp_path / "src.img", 96 * MiB, seed=1)
    other = changed_copy(src, tmp_path / "other.img", every=8, seed=2)
    template = tmp_path / "template"
    subprocess.run(cli("init", "--block-size", "256K", template), env=ENV, check=True)
    subprocess.run(cli("backup", "--repo", template, src), env=ENV, check=True)
    subprocess.run(cli("forget", "--yes", "--repo", template, "latest"), env=ENV, check=True)

    # How long does gc take here (its process start included)?
    probe = tmp_path / "probe"
    shutil.copytree(template, probe)
    started = time.monotonic()
    subprocess.run(cli("gc", "--repo", probe), env=ENV, check=True, capture_output=True)
    gc_length = time.monotonic() - started
    shutil.rmtree(probe)

    delays = [gc_length * step / 5 for step in range(6)]
    outcomes = []
    for order in ("gc first", "backup first"):
        for delay in delays:
            label = f"{order}, {delay:.2f} s"
            repo_path = tmp_path / "repo"
            shutil.copytree(template, repo_path)
            gc_argv = cli("gc", "--repo", repo_path)
            backup_argv = cli("backup", "--repo", repo_path, other)
            first, second = (
                (gc_argv, backup_argv) if order == "gc first" else (backup_argv, gc_argv)
            )
            a = subprocess.Popen(first, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            time.sleep(delay)
            b = subprocess.Popen(second, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for child in (a, b):
                output = child.communicate()[0].decode()
                assert child.returncode == 0, f"{label}: {output}"
            check_repository(repo_path, other, label)
            # The next incremental trusts its parent: it must not reference a lost chunk.
            subprocess.run(cli("backup", "--repo", repo_path, other), env=ENV, check=True)
            subprocess.run(cli("gc", "--repo", repo_path), env=ENV, check=True)
            check_repository(repo_path, other, label + ", after the next backup and gc")
            outcomes.append(label)
            shutil.rmtree(repo_path)
    print(f"gc takes {gc_length:.2f} s; interleavings checked: {outcomes}")


# --- interleavings made certain ----------------------------------------------------------


class PausedBackup:
    """A real backup in a thread that stops, holding its real writer lease, until
    :meth:`resume`: at its first progress report (``early``, a worker stops there while
    the others go on), or at its last, when every block is stored and every index written
    and only the manifest, the commit point, is left."""

    def __init__(self, repo_path: Path, source: Path, *, early: bool = False) -> None:
        self.repo = Repository.open(repo_path, PASSPHRASE)
        self.source = source
        self.early = early
        self.paused = threading.Event()
        self._go = threading.Event()
        self.snapshot: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run)

    def _progress(self, event: Progress) -> None:
        if not self._go.is_set() and (self.early or event.finished):
            self.paused.set()
            self._go.wait(60)

    def _run(self) -> None:
        try:
            self.snapshot = backup_path(self.repo, self.source, progress=self._progress)
        except BaseException as e:  # reported by finish()
            self.error = e
            self.paused.set()

    def start(self) -> PausedBackup:
        self.thread.start()
        assert self.paused.wait(60), "the backup never reached its pause"
        assert self.error is None, self.error
        return self

    def resume(self) -> Any:
        self._go.set()
        self.thread.join(120)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.snapshot


def writer_leases(repo: Repository) -> list[leases.Lease]:
    return leases.live_leases(repo.path / "leases", ("writer",))


@pytest.fixture
def forgotten(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A 256 KiB-block repository whose only snapshot (of ``src``) is forgotten, and
    ``other``, which shares 7 of 8 blocks with ``src``."""
    src = random_image(tmp_path / "src.img", 16 * MiB, seed=3)
    other = changed_copy(src, tmp_path / "other.img", every=8, seed=4)
    repo = Repository.init(tmp_path / "repo", passphrase=PASSPHRASE, block_size=BLOCK)
    old = backup_path(repo, src)
    repo.delete_snapshot(old.id)
    # Old enough that gc does not spare them as a running backup's own new chunks.
    hour_ago = time.time() - 3600
    for entry in repo.iter_chunk_files():
        os.utime(entry.path, (hour_ago, hour_ago))
    return repo.path, src, other


@pytest.mark.parametrize("early", [True, False], ids=["at its start", "before its commit"])
def test_gc_while_a_paused_backup_holds_its_lease(
    forgotten: tuple[Path, Path, Path], tmp_path: Path, early: bool
) -> None:
    """gc runs entirely while a backup that shares chunks with the forgotten snapshot is
    paused: the batch must wait for that backup's lease, the backup deduplicates against
    the chunks it found, and the next gc brings them back."""
    repo_path, _src, other = forgotten
    size = other.stat().st_size
    backup = PausedBackup(repo_path, other, early=early).start()
    repo = Repository.open(repo_path, PASSPHRASE)
    (writer,) = writer_leases(repo)
    during = gc.collect(repo)
    assert during.trashed > 0
    assert during.freed == 0 and during.waiting_batches == 1, during
    assert writer.name in during.waited_for
    snapshot = backup.resume()
    new_chunks = snapshot.manifest["stats"]["new_chunks"]
    blocks = size // BLOCK
    if not early:  # it found 7 of 8 blocks stored before gc moved them: not written again
        assert new_chunks == blocks // 8, snapshot.manifest["stats"]
    after = gc.collect(repo)
    assert after.restored > 0 and after.waiting_batches == 0, after
    report = verify(repo, read_data=True)
    assert report.ok, [d.describe() for d in report.damage]
    restore_snapshot(repo, snapshot, tmp_path / "out.img")
    assert (tmp_path / "out.img").read_bytes() == other.read_bytes()


def test_backup_starting_after_the_sweep_is_safe(
    forgotten: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's case: the backup starts after gc has looked at the leases. Here it runs
    whole between gc's sweep and its seal: its snapshot must keep what it references."""
    repo_path, _src, other = forgotten
    repo = Repository.open(repo_path, PASSPHRASE)
    made: list[Any] = []
    real_seal = gc._seal

    def seal_after_a_backup(
        store: LocalStore, batch: str, alive: list[leases.Lease], sealed: Any
    ) -> None:
        made.append(backup_path(Repository.open(repo_path, PASSPHRASE), other))
        real_seal(store, batch, leases.live_leases(repo.path / "leases"), sealed)

    monkeypatch.setattr(gc, "_seal", seal_after_a_backup)
    result = gc.collect(repo)
    monkeypatch.undo()
    (snapshot,) = made
    assert result.trashed > 0 and result.restored > 0, result
    report = verify(repo, read_data=True)
    assert report.ok, [d.describe() for d in report.damage]
    restore_snapshot(repo, snapshot, tmp_path / "out.img")
    assert (tmp_path / "out.img").read_bytes() == other.read_bytes()


def test_a_writer_trusting_a_parent_forgotten_after_the_seal(
    forgotten: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule 2 of gc: backup W1 finds the forgotten chunks stored and is paused while gc
    sweeps them to trash. After the seal, W1 commits P; W2 starts with P as its parent
    (taking P's chunks, which sit in trash, as stored) and P is forgotten. At purge no
    lease of the seal is alive, yet the batch must wait: W2's lease names a parent the
    fresh mark does not see. Without that rule its chunks would be freed under it."""
    repo_path, src, _other = forgotten
    repo = Repository.open(repo_path, PASSPHRASE)
    w1 = PausedBackup(repo_path, src).start()
    w2_box: list[PausedBackup] = []
    real_seal = gc._seal

    def seal_then_interleave(
        store: LocalStore, batch: str, alive: list[leases.Lease], sealed: Any
    ) -> None:
        real_seal(store, batch, alive, sealed)
        parent = w1.resume()
        w2 = PausedBackup(repo_path, src).start()
        (lease,) = writer_leases(repo)
        assert lease.parent == parent.id
        repo.delete_snapshot(parent.id)
        w2_box.append(w2)

    monkeypatch.setattr(gc, "_seal", seal_then_interleave)
    during = gc.collect(repo)
    monkeypatch.undo()
    (w2,) = w2_box
    assert during.trashed > 0 and during.freed == 0 and during.waiting_batches == 1, during
    (w2_lease,) = writer_leases(repo)
    assert w2_lease.name in during.waited_for
    snapshot = w2.resume()
    assert snapshot.manifest["stats"]["new_chunks"] == 0  # every block trusted from P
    after = gc.collect(repo)
    assert after.restored > 0 and after.waiting_batches == 0, after
    report = verify(repo, read_data=True)
    assert report.ok, [d.describe() for d in report.damage]
    restore_snapshot(repo, snapshot, tmp_path / "out.img")
    assert (tmp_path / "out.img").read_bytes() == src.read_bytes()
