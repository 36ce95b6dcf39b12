"""Real ext4 filesystems on loop devices holding real files: back up, change, back up,
restore both points in time; e2fsck clean and every file identical."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from imaging.errors import NoSpace, TargetTooSmall
from imaging.repository import gc
from imaging.repository.store import Repository
from imaging.repository.verify import verify
from tests.conftest import PASSPHRASE
from tests.support import MiB, fill_with_files, loop_device, mounted, run_cli, sh, tree_digest

pytestmark = [pytest.mark.integration, pytest.mark.root]


def make_ext4(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
    sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", path)


def test_two_points_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source_img = tmp_path / "source.img"
    make_ext4(source_img, 256 * MiB)
    repo = tmp_path / "repo"
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    assert run_cli("init", str(repo)) == 0
    with loop_device(source_img) as dev:
        with mounted(dev, tmp_path / "mnt") as mnt:
            fill_with_files(mnt, 90 * MiB)
            first_files = tree_digest(mnt)
        monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
        assert run_cli("backup", "--repo", str(repo), dev) == 0
        with mounted(dev, tmp_path / "mnt") as mnt:
            victims = sorted(p for p in mnt.rglob("*") if p.is_file())
            victims[0].write_bytes(b"changed\n" * 1000)
            victims[1].unlink()
            (mnt / "new-file").write_bytes(os.urandom(3 * MiB))
            second_files = tree_digest(mnt)
        monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
        assert run_cli("backup", "--repo", str(repo), dev) == 0
    assert first_files != second_files

    opened = Repository.open(repo, PASSPHRASE)
    first, second = opened.snapshots()
    assert second.stored < first.stored / 4  # only what changed was added

    for snapshot, expected in ((first, first_files), (second, second_files)):
        target_img = tmp_path / f"target-{snapshot.id}.img"
        with open(target_img, "wb") as f:
            f.truncate(300 * MiB)
        with loop_device(target_img) as target:
            monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
            assert run_cli("restore", "--repo", str(repo), snapshot.id, target, "--yes") == 0
            sh("e2fsck", "-fn", target)
            with mounted(target, tmp_path / "check", "ro") as mnt:
                assert tree_digest(mnt) == expected
    assert verify(opened, read_data=True).ok


def test_smaller_or_mounted_target_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source_img = tmp_path / "source.img"
    make_ext4(source_img, 64 * MiB)
    repo = Repository.init(tmp_path / "repo", passphrase=PASSPHRASE)
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    assert run_cli("backup", "--repo", str(repo.path), str(source_img)) == 0
    small = tmp_path / "small.img"
    with open(small, "wb") as f:
        f.truncate(32 * MiB)
    with loop_device(small) as target:
        capsys.readouterr()
        monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
        code = run_cli("restore", "--repo", str(repo.path), "latest", target, "--yes")
        assert code == TargetTooSmall.exit_code
        err = capsys.readouterr().err
        assert str(64 * MiB) in err and "smaller than the image needs" in err
    big = tmp_path / "big.img"
    make_ext4(big, 80 * MiB)
    with loop_device(big) as target, mounted(target, tmp_path / "busy"):
        capsys.readouterr()
        monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
        assert run_cli("restore", "--repo", str(repo.path), "latest", target, "--yes") != 0
        assert "busy" in capsys.readouterr().err.lower()


def test_full_backup_drive(tmp_path: Path) -> None:
    drive = tmp_path / "drive.img"
    make_ext4(drive, 48 * MiB)
    source = tmp_path / "source.img"
    source.write_bytes(os.urandom(96 * MiB))
    with loop_device(drive) as dev, mounted(dev, tmp_path / "drive") as mnt:
        repo = Repository.init(mnt / "repo", passphrase=PASSPHRASE)
        from imaging.image.backup import backup_path

        with pytest.raises(NoSpace, match="full"):
            backup_path(repo, source)
        assert repo.snapshots() == []
        assert verify(repo).ok
        free_before = shutil.disk_usage(mnt).free
        result = gc.collect(repo)
        assert result.freed > 0
        assert shutil.disk_usage(mnt).free > free_before + 20 * MiB
        assert list((repo.path / "tmp").iterdir()) == []
