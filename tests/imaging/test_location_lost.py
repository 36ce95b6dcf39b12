"""Issue 22, item 2: the backup drive vanishes mid-backup.

A real exFAT backup drive on a loop device, mounted with its FUSE driver (exfat-fuse) where
the app mounts drives (``/run/hourglass/locations``); the driver's process is killed while
a backup writes chunks. The backup stops with :class:`LocationLost` (the CLI: its message,
exit code 15, no traceback), commits nothing, the dead mount is cleaned, and once the drive
is mounted again the next backup works."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging import jobs
from imaging.errors import LocationLost
from imaging.jobs.locations import Location, mount_partition, release_lost
from imaging.mounts.mountinfo import is_mounted
from imaging.progress import Progress
from imaging.repository.store import Repository
from imaging.repository.verify import verify
from tests.conftest import PASSPHRASE
from tests.faultydisk import faulty_disk
from tests.support import (
    MiB,
    have,
    hourglass_subprocess,
    kill_exfat_fuse,
    loop_device,
    sh,
    write_random_image,
)

# Never beside another of these (tests/conftest.py, xdist): a killed FUSE daemon's mount
# still names its loop partition until it is cleaned up, and discovery on the other worker
# then took a reused device of that name for mounted.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.xdist_group("dead-fuse"),
]

SOURCE_MIB = 96


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[str]:
    """A USB drive formatted exFAT (no partition table: the whole device is the filesystem,
    as many sticks come)."""
    for tool in ("mkfs.exfat", "mount.exfat-fuse"):
        if not have(tool):
            pytest.skip(f"needs {tool}")
    image = tmp_path / "usb.img"
    sh("truncate", "-s", "400M", image)
    with loop_device(image) as device:
        sh("mkfs.exfat", "-L", "BACKUP", device)
        yield device
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            if device in line:  # whatever a failed test left mounted
                subprocess.run(["umount", "-l", line.split()[4]], check=False)


@pytest.fixture
def source(tmp_path: Path) -> Iterator[str]:
    """The PC's disk, read slowly (5 ms a read, about 25 MB/s): a backup of it lasts
    seconds, so the drive goes while chunks are written, not after the snapshot was
    recorded (a fast one ended in 0.24 s, before the CLI's progress said 8 MiB)."""
    image = tmp_path / "pc.img"
    write_random_image(image, SOURCE_MIB * MiB, seed=22)
    with faulty_disk(image, tmp_path, delay=0.005) as device:
        yield device


def new_repository(drive: str) -> tuple[Location, Path]:
    location = mount_partition(drive, "exfat", writable=True)
    assert location.mounted_by_us and "/run/hourglass/locations/" in location.mountpoint
    path = Path(location.mountpoint) / "hourglass-backups"
    Repository.init(path, passphrase=PASSPHRASE)
    return location, path


def test_a_drive_that_vanishes_mid_backup_is_named_and_cleaned(drive: str, source: str) -> None:
    location, path = new_repository(drive)
    repo = Repository.open(path, PASSPHRASE)
    killed: list[int] = []

    def progress(event: Progress) -> None:
        if not killed and event.done >= 8 * MiB:
            killed.append(event.done)
            kill_exfat_fuse(location.mountpoint)

    with pytest.raises(LocationLost) as raised:
        jobs.backup(repo, jobs.BackupRequest(sources=(source,)), progress=progress)
    assert killed, "the backup ended before the drive went"
    assert "was disconnected" in raised.value.message
    assert str(path) in raised.value.message
    assert raised.value.exit_code == 15

    release_lost(location)
    assert not is_mounted(location.mountpoint)
    assert not os.path.exists(location.mountpoint)

    # Plugged in again: no snapshot was recorded, and the next backup works.
    again = mount_partition(drive, "exfat", writable=True)
    try:
        repo = Repository.open(Path(again.mountpoint) / "hourglass-backups", PASSPHRASE)
        assert repo.snapshots() == []
        result = jobs.backup(repo, jobs.BackupRequest(sources=(source,)))
        assert result.ok
        assert [s.id for s in repo.snapshots()] == [result.snapshot.id]
        stored = result.snapshot.stored / MiB
        print(
            f"the drive went after {killed[0] / MiB:.0f} MiB; next backup stored {stored:.1f} MiB"
        )
    finally:
        release_lost(again)


def test_the_cli_says_the_drive_was_disconnected(drive: str, source: str, tmp_path: Path) -> None:
    location, path = new_repository(drive)
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE)
    child = hourglass_subprocess(
        "backup", "--repo", str(path), "--passphrase-file", str(secret),
        "--progress", "json", source,
        stderr=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert child.stderr is not None
    lines = []
    killed = False
    for raw in child.stderr:
        line = raw.decode(errors="replace")
        lines.append(line)
        if not killed and line.startswith("{") and json.loads(line).get("done", 0) >= 8 * MiB:
            kill_exfat_fuse(location.mountpoint)
            killed = True
    code = child.wait(60)
    said = "".join(lines)
    assert killed, said
    assert code == 15, said
    assert "was disconnected" in said
    assert "Traceback" not in said and "internal error" not in said
    print("the CLI said:", *said.splitlines()[-2:], sep="\n  ")
    release_lost(location)
    assert not is_mounted(location.mountpoint)


def test_a_check_of_a_drive_that_went_says_so_not_damage(drive: str, tmp_path: Path) -> None:
    """The CI once saw the drive go after the snapshot was recorded: the check that follows
    a backup then called the unreadable index DAMAGED (exit 3). A drive that went is not a
    damaged repository."""
    location, path = new_repository(drive)
    image = tmp_path / "small.img"
    write_random_image(image, 8 * MiB, seed=23)
    with loop_device(image) as device:
        repo = Repository.open(path, PASSPHRASE)
        result = jobs.backup(repo, jobs.BackupRequest(sources=(device,)))
    assert result.ok
    kill_exfat_fuse(location.mountpoint)
    for read_data in (False, True):
        with pytest.raises(LocationLost) as raised:
            verify(repo, [result.snapshot], read_data=read_data)  # as a backup's own check
        assert "was disconnected" in raised.value.message
    release_lost(location)
