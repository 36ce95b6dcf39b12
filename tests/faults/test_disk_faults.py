"""A failing source disk (read errors) and a target that dies mid-restore."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imaging.errors import HourglassError, SourceError
from imaging.image.backup import BackupOptions, describe_unreadable, run_backup
from imaging.image.plan import plan_for
from imaging.image.restore import restore_snapshot
from imaging.repository.store import Repository
from tests.conftest import PASSPHRASE
from tests.faultydisk import faulty_disk
from tests.support import MiB, loop_device, mounted, run_cli, sh

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.root]


def ext4_with_a_file(tmp_path: Path) -> tuple[Path, int]:
    """An ext4 image with /victim.bin, and the byte offset of one of its blocks."""
    image = tmp_path / "fs.img"
    sh("truncate", "-s", "64M", image)
    sh("mkfs.ext4", "-q", "-F", "-b", "4096", image)
    with loop_device(image) as dev, mounted(dev, tmp_path / "m") as mnt:
        (mnt / "victim.bin").write_bytes(os.urandom(2 * MiB))
        (mnt / "fine.txt").write_text("unharmed\n")
    extents = sh("debugfs", "-R", "blocks /victim.bin", image).stdout.split()
    return image, int(extents[10]) * 4096


def test_read_errors_stop_the_backup_or_are_rescued(tmp_path: Path) -> None:
    image, bad_offset = ext4_with_a_file(tmp_path)
    repo = Repository.init(tmp_path / "repo", passphrase=PASSPHRASE)
    with faulty_disk(image, tmp_path, bad=[(bad_offset, 8192)]) as dev:
        with pytest.raises(SourceError) as caught:
            run_backup(repo, plan_for([dev]))
        assert f"bytes {bad_offset}-{bad_offset + 8191}" in caught.value.message
        assert "--rescue" in (caught.value.hint or "")
        assert repo.snapshots() == []
        snapshot = run_backup(repo, plan_for([dev]), options=BackupOptions(rescue=True))
    (image_meta,) = snapshot.images
    assert image_meta.unreadable == ((bad_offset, 8192),)
    assert image_meta.unreadable_files == ("/victim.bin",)
    report = describe_unreadable(snapshot)
    assert any("/victim.bin" in line for line in report)
    out = tmp_path / "restored.img"
    restore_snapshot(repo, snapshot, out)
    with open(out, "rb") as f:
        f.seek(bad_offset)
        assert f.read(8192) == bytes(8192)  # zeros where the source could not be read
    sh("e2fsck", "-fn", out)
    assert "unharmed" in sh("debugfs", "-R", "cat /fine.txt", out).stdout


def test_restore_repeats_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    image, bad_offset = ext4_with_a_file(tmp_path)
    repo = Repository.init(tmp_path / "repo", passphrase=PASSPHRASE)
    with faulty_disk(image, tmp_path, bad=[(bad_offset, 4096)]) as dev:
        monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
        assert run_cli("backup", "--repo", str(repo.path), dev, "--rescue") == 0
    assert "damaged file /victim.bin" in capsys.readouterr().out
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    assert (
        run_cli("restore", "--repo", str(repo.path), "latest", str(tmp_path / "o.img"), "--yes")
        == 0
    )
    err = capsys.readouterr().err
    assert "unreadable" in err and "/victim.bin" in err


def test_target_that_fails_mid_restore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "source.img"
    source.write_bytes(os.urandom(48 * MiB))
    repo = Repository.init(tmp_path / "repo", passphrase=PASSPHRASE)
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    assert run_cli("backup", "--repo", str(repo.path), str(source)) == 0
    target = tmp_path / "target.img"
    sh("truncate", "-s", "64M", target)
    with faulty_disk(target, tmp_path, fail_writes_after=16 * MiB) as dev:
        capsys.readouterr()
        monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
        code = run_cli("restore", "--repo", str(repo.path), "latest", dev, "--yes")
        err = capsys.readouterr().err
    assert code not in (0, 70), err  # a clear, typed error: not success, not a crash
    assert "failed" in err and dev in err and "Traceback" not in err
    with pytest.raises(HourglassError):
        snapshot = repo.snapshots()[0]
        with faulty_disk(target, tmp_path, fail_writes_after=0) as dev:
            restore_snapshot(repo, snapshot, dev)
