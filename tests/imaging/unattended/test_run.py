"""Unattended runs on loop-device disks: backup, restore and files-restore from kernel
parameters, with the repository found by its filesystem label; exactly one result line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from imaging.repository.store import Repository
from imaging.unattended.run import RESULT, run_unattended
from tests.conftest import PASSPHRASE, WEAK_KDF
from tests.imaging.disks.helpers import (
    GptPart,
    attached,
    make_fs,
    make_gpt_disk,
    node,
    put_files,
    read_files,
)
from tests.support import MiB, sh

pytestmark = [pytest.mark.integration, pytest.mark.root]

PC_LAYOUT = [
    GptPart(1, "vfat", 64, "ef00", "ESP", "EFI system"),
    GptPart(2, "ext4", 128, "8304", "pcroot", "root"),
]


def one_result(lines: list[str], printed: str) -> str:
    results = [line for line in printed.splitlines() if line.startswith(RESULT)]
    assert len(results) == 1, printed
    return results[0]


def repository_drive(device: str, label: str, tmp_path: Path) -> str:
    """An ext4 backup drive on ``device`` labelled ``label``, holding a repository at /repo
    and its passphrase at /pass; the kernel parameters that name them."""
    make_fs(device, "ext4", label)
    mnt = tmp_path / f"{label}-mnt"
    mnt.mkdir()
    sh("mount", device, mnt)
    try:
        Repository.init(mnt / "repo", passphrase=PASSPHRASE)
        (mnt / "pass").write_text(PASSPHRASE + "\n")
    finally:
        sh("umount", mnt)
    return f"hourglass.repo=LABEL={label}:/repo hourglass.passphrase_file=LABEL={label}:/pass "


def test_backup_restore_files_restore(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    mount_root: Path,
) -> None:
    from imaging.repository import keys

    monkeypatch.setattr(keys, "PASSPHRASE_KDF", WEAK_KDF)
    pc_image, backup_image, new_image = (
        tmp_path / "pc.img",
        tmp_path / "backup.img",
        tmp_path / "new.img",
    )
    make_gpt_disk(pc_image, PC_LAYOUT, 196)
    sh("truncate", "-s", "300M", backup_image)
    sh("truncate", "-s", "196M", new_image)
    said: list[str] = []
    with attached(pc_image) as pc, attached(backup_image) as backup, attached(new_image) as new:
        make_fs(node(pc, 1), "vfat", "ESP")
        make_fs(node(pc, 2), "ext4", "pcroot")
        files = put_files(node(pc, 2), "ext4", tmp_path, 8 * MiB, seed=3)
        common = "quiet " + repository_drive(backup, "HGTESTBACKUP", tmp_path)
        common += "hourglass.after=shell "
        outcome = run_unattended(
            common + f"hourglass.run=backup hourglass.source={pc}", say=said.append
        )
        assert outcome.ok, outcome.line
        assert outcome.after == "shell"
        assert one_result(said, capsys.readouterr().out).startswith(f"{RESULT} OK backup ")

        outcome = run_unattended(
            common + f"hourglass.run=restore hourglass.target={new} hourglass.snapshot=latest "
            "hourglass.new_ids=1",
            say=said.append,
        )
        assert outcome.ok, outcome.line
        line = one_result(said, capsys.readouterr().out)
        assert "verified" in line and "; new ids: " in line, line
        sh("partx", "--update", new)
        assert read_files(node(new, 2), "ext4", tmp_path) == files

        dest = tmp_path / "dest"
        dest.mkdir()
        name = sorted(files)[0]
        outcome = run_unattended(
            common
            + f"hourglass.run=files-restore hourglass.partition=2 hourglass.paths=/{name} hourglass.to={dest}",
            say=said.append,
        )
        assert outcome.ok, outcome.line
        restored = dest / Path(name).name
        assert hashlib.sha256(restored.read_bytes()).hexdigest() == files[name], name
        assert [p.name for p in dest.iterdir()] == [restored.name]  # that file and nothing else
        capsys.readouterr()

        # Failures: one FAILED line, never OK.
        (tmp_path / "wrong").write_text("not the passphrase\n")
        outcome = run_unattended(
            f"hourglass.run=backup hourglass.repo=LABEL=HGTESTBACKUP:/repo hourglass.source={pc} "
            f"hourglass.passphrase_file={tmp_path / 'wrong'}",
            say=said.append,
        )
        assert not outcome.ok
        line = one_result(said, capsys.readouterr().out)
        assert line.startswith(f"{RESULT} FAILED Wrong passphrase")
        outcome = run_unattended(
            "hourglass.run=restore hourglass.repo=LABEL=NO-SUCH-LABEL:/r", say=said.append
        )
        assert not outcome.ok and "NO-SUCH-LABEL" in outcome.line
        outcome = run_unattended(
            common + "hourglass.run=backup", say=said.append
        )  # no source named
        assert not outcome.ok and "internal disk" in outcome.line  # loop devices never count
    assert not list(mount_root.glob("*/*")), "mounts were left behind"


def test_a_restore_to_a_smaller_disk_shrinks_beside_the_repository(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    mount_root: Path,
) -> None:
    """An unattended restore onto a smaller disk makes its scratch copy on the backup drive
    (mounted read-write for it), not in the temporary directory, which on the appliance is
    RAM: here a tmpfs of 8 MiB that could not hold it. Before, the restore mounted the
    drive read-only and the scratch copy went to RAM (the e2e appliance, 2 GiB of RAM, then
    stalled for good copying a 900 MB root there)."""
    import tempfile

    from imaging.repository import keys

    monkeypatch.setattr(keys, "PASSPHRASE_KDF", WEAK_KDF)
    layout = [
        GptPart(1, "vfat", 32, "ef00", "ESP", "EFI system"),
        GptPart(2, "ext4", 256, "8304", "pcroot", "root"),
    ]
    pc_image, backup_image, new_image = (
        tmp_path / "pc.img",
        tmp_path / "backup.img",
        tmp_path / "smaller.img",
    )
    make_gpt_disk(pc_image, layout, 1 + 32 + 256 + 2)
    sh("truncate", "-s", "600M", backup_image)
    sh("truncate", "-s", "160M", new_image)
    tiny = tmp_path / "ram"
    tiny.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=8M", "tmpfs", tiny)
    said: list[str] = []
    try:
        with attached(pc_image) as pc, attached(backup_image) as backup, attached(new_image) as new:
            make_fs(node(pc, 1), "vfat", "ESP")
            make_fs(node(pc, 2), "ext4", "pcroot")
            files = put_files(node(pc, 2), "ext4", tmp_path, 8 * MiB, seed=5)
            common = repository_drive(backup, "HGTESTSHRINK", tmp_path) + "hourglass.after=shell "
            outcome = run_unattended(
                common + f"hourglass.run=backup hourglass.source={pc}", say=said.append
            )
            assert outcome.ok, outcome.line
            capsys.readouterr()
            monkeypatch.setattr(tempfile, "tempdir", str(tiny))
            outcome = run_unattended(
                common + f"hourglass.run=restore hourglass.target={new} hourglass.snapshot=latest",
                say=said.append,
            )
            assert outcome.ok, outcome.line
            line = one_result(said, capsys.readouterr().out)
            assert "the disk is smaller" in line and "resize2fs" in line, line
            sh("partx", "--update", new)
            assert read_files(node(new, 2), "ext4", tmp_path) == files
    finally:
        sh("umount", tiny)
    assert not list(mount_root.glob("*/*")), "mounts were left behind"
