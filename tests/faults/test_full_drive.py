"""A full backup drive: the failed backup says so, and then, with 0 bytes free, snapshots,
restore, forget and gc still work, gc gives the space back and the next backup fits.

Run with the real `hourglass` command on ext4 (made with no blocks reserved for root: the tests
run as root, who could otherwise still write) and on exFAT (exfat-fuse, as on most USB drives).
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE
from tests.imaging.disks.helpers import mounted_fs
from tests.support import MiB, loop_device, sh

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

ENV = {**os.environ, "HOURGLASS_PASSPHRASE": PASSPHRASE}


def hourglass(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imaging.cli.main", *map(str, argv)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def fill(drive: Path) -> int:
    """Fill what is left of ``drive`` with a file outside the repository: 0 bytes free."""
    written = 0
    with open(drive / "filler", "wb", buffering=0) as f:
        chunk = b"\xa5" * MiB
        while chunk:
            try:
                written += os.write(f.fileno(), chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]
    return written


def make_drive(image: Path, fstype: str, size: int) -> None:
    with open(image, "wb") as f:
        f.truncate(size)
    if fstype == "ext4":
        sh("mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=0", image)
    else:
        sh("mkfs.exfat", image)


@pytest.mark.parametrize("fstype", ["ext4", "exfat"])
def test_a_full_drive_recovers_by_its_own_hint(tmp_path: Path, fstype: str) -> None:
    rng = random.Random(7)
    first = tmp_path / "first.img"
    first.write_bytes(rng.randbytes(24 * MiB))
    big = tmp_path / "big.img"
    big.write_bytes(rng.randbytes(64 * MiB))
    image = tmp_path / "drive.img"
    make_drive(image, fstype, 64 * MiB)
    with loop_device(image) as dev, mounted_fs(dev, fstype, tmp_path / "drive") as drive:
        repo = drive / "repo"
        assert hourglass("init", repo).returncode == 0
        assert hourglass("backup", "--repo", repo, first).returncode == 0

        # 1. The backup that does not fit: exit 7, it says the drive is full, nothing listed.
        run = hourglass("backup", "--repo", repo, big)
        assert run.returncode == 7, run.stderr
        assert "full" in run.stderr and "No snapshot was recorded" in run.stderr
        fill(drive)
        assert shutil.disk_usage(drive).free < 64 * 1024, shutil.disk_usage(drive)

        # 2. With the drive full to the last byte, reading still works.
        run = hourglass("snapshots", "--repo", repo, "--json")
        assert run.returncode == 0, run.stderr
        out = tmp_path / "out.img"
        run = hourglass("restore", "--yes", "--repo", repo, "latest", out)
        assert run.returncode == 0, run.stderr
        assert out.read_bytes() == first.read_bytes()
        assert "No snapshot was recorded" not in run.stdout + run.stderr

        # 3. The hint: forget, then gc. gc has no room for trash: it deletes directly.
        assert hourglass("forget", "--yes", "--repo", repo, "latest").returncode == 0
        run = hourglass("gc", "--repo", repo)
        assert run.returncode == 0, run.stdout + run.stderr
        assert shutil.disk_usage(drive).free > 20 * MiB, run.stdout
        assert not (repo / "leases" / "gc.direct").exists()
        assert [p.name for p in (repo / "leases").iterdir()] == []

        # 4. Afterwards the repository works as before.
        (drive / "filler").unlink()
        assert hourglass("backup", "--repo", repo, first).returncode == 0
        run = hourglass("verify", "--repo", repo, "--read-data")
        assert run.returncode == 0, run.stdout + run.stderr
        run = hourglass("restore", "--yes", "--repo", repo, "latest", out)
        assert run.returncode == 0, run.stderr
        assert out.read_bytes() == first.read_bytes()
