"""Power loss: the appliance backs up in QEMU and the plug is pulled (QEMU SIGKILLed) at
random moments of the backup. Afterwards the backup drive must list no snapshot that cannot
be restored: every listed one verifies with --read-data and restores to exactly the disk it
was taken of, and the repository takes the next backup.

The model of a power loss: what the guest had written reached the drive file (QEMU's
write-back cache is the host's page cache, which survives QEMU); what it had not flushed
from its own memory is lost. The backup drive's ext4 is recovered by its journal on mount.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from build.context import Context
from build.qemu import run_until_exit
from tests.e2e.hostdisk import partition_mounted, sh
from tests.e2e.lab import (
    PASSPHRASE_FILE,
    REPO,
    appliance_machine,
    hourglass,
    make_backup_drive,
    repo_snapshots,
    result_lines,
)

pytestmark = [pytest.mark.faults, pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]

PULLS = 2  # each an appliance boot of 3-5 minutes in TCG: an early and a late one
DISK_MIB = 320
PART_MIB = 300  # partition 1: from 1 MiB, 300 MiB of random data
BEGUN = b"hourglass: backing up"


def make_source(image: Path) -> None:
    """A disk with a GPT and one partition of random data (stored block by block)."""
    with image.open("wb") as f:
        f.truncate(DISK_MIB << 20)
    sh("sgdisk", f"--new=1:1MiB:+{PART_MIB}MiB", "--typecode=1:8300", image)
    with image.open("r+b") as f:
        f.seek(1 << 20)
        for _ in range(PART_MIB - 20):
            f.write(os.urandom(1 << 20))


def change_source(image: Path) -> None:
    """New data in the whole partition: each run writes as many chunks as the first one, so
    a pull within the measured span lands while chunks are being written."""
    with image.open("r+b") as f:
        f.seek(1 << 20)
        for _ in range(PART_MIB - 20):
            f.write(os.urandom(1 << 20))


def digest(path: Path) -> str:
    """SHA-256 of partition 1's bytes (the table around it is rewritten by a restore)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(1 << 20)
        for _ in range(PART_MIB):
            h.update(f.read(1 << 20))
    return h.hexdigest()


def check_drive(backup: Path, scratch: Path, versions: set[str]) -> list[str]:
    """Every snapshot listed verifies and restores to one of ``versions`` of the source."""
    listed = repo_snapshots(backup, scratch)
    with partition_mounted(backup, 1, scratch / "backup.mnt") as root:
        repo = ["--repo", str(root / "repo"), "--passphrase-file", str(root / "passphrase")]
        hourglass("verify", *repo, "--read-data")
        for snapshot in listed:
            out = scratch / "restored.img"
            out.unlink(missing_ok=True)
            hourglass("restore", *repo, str(snapshot["id"]), str(out), "--yes")
            assert digest(out) in versions, f"snapshot {snapshot['id']} restores to another disk"
            out.unlink()
    return [str(s["id"]) for s in listed]


def test_power_loss_during_backups(
    appliance: Context, tmp_path: Path, results: dict[str, object]
) -> None:
    source, backup = tmp_path / "pc.img", tmp_path / "backup.img"
    make_source(source)
    make_backup_drive(backup, tmp_path, size_gib=3)  # five runs of 280 MiB each
    rng = random.Random(int.from_bytes(os.urandom(4)))
    orders = {"run": "backup", "repo": REPO, "passphrase_file": PASSPHRASE_FILE}
    versions = {digest(source)}

    # One whole backup: how long the backing up takes, so the pulls land within it.
    marks: dict[str, float] = {}

    def watch(serial: bytes) -> bool:
        if BEGUN in serial:
            marks.setdefault("begun", time.monotonic())
        if b"HOURGLASS-RESULT:" in serial:
            marks.setdefault("ended", time.monotonic())
        return False

    run = run_until_exit(
        appliance_machine(appliance, [source, backup], orders), tmp_path / "whole", pull_plug=watch
    )
    assert [line.split()[1] for line in result_lines(run.serial)] == ["OK"]
    span = marks["ended"] - marks["begun"]
    results["power_loss.backup_seconds_in_appliance"] = round(span)
    assert len(check_drive(backup, tmp_path, versions)) == 1

    outcomes = []
    mid_backup = 0
    for pull in range(PULLS):
        change_source(source)
        versions.add(digest(source))
        before = {str(s["id"]) for s in repo_snapshots(backup, tmp_path)}
        # Spread over the span: an early (15-30 %) and a late pull (60-75 %; the later runs
        # can be a little faster than the first, so the span's end is left out).
        delay = (0.15 + 0.45 * pull + rng.uniform(0, 0.15)) * span
        begun: list[float] = []

        def pull_plug(serial: bytes, delay: float = delay, begun: list[float] = begun) -> bool:
            if BEGUN in serial and not begun:
                begun.append(time.monotonic())
            return bool(begun) and time.monotonic() - begun[0] >= delay

        run = run_until_exit(
            appliance_machine(appliance, [source, backup], orders),
            tmp_path / f"pull-{pull}",
            pull_plug=pull_plug,
        )
        assert begun, "the backup never began"
        finished = bool(result_lines(run.serial))
        after = set(check_drive(backup, tmp_path, versions))
        assert before <= after
        new = after - before
        if not finished:
            assert not new or len(new) == 1  # a commit that landed just before the pull
        when = "after the backup ended" if finished else "mid-backup"
        listed = "its snapshot listed" if new else "nothing listed"
        outcomes.append(f"pulled {delay:.1f} s into a {span:.1f} s backup ({when}): {listed}")
        mid_backup += not finished
    # The test is about pulls during the backup: at least one must have landed there.
    assert mid_backup >= 1, outcomes

    # The repository takes the next backup, and gc tidies what the pulled runs left.
    with partition_mounted(backup, 1, tmp_path / "backup.mnt") as root:
        repo = ["--repo", str(root / "repo"), "--passphrase-file", str(root / "passphrase")]
        hourglass("backup", *repo, str(source))
        hourglass("gc", *repo)
        hourglass("verify", *repo, "--read-data")
    results["power_loss.pulls"] = outcomes
