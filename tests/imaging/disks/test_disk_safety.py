"""What a backup or restore must refuse: mounted sources, the repository's disk, the boot
disk, disks in use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging.disks import mounts
from imaging.disks.discover import boot_disk_names
from imaging.disks.restore import check_disk_target
from imaging.errors import SourceError, TargetUnsuitable
from imaging.image import plan as plans
from imaging.repository.store import Repository
from tests.imaging.disks import helpers
from tests.imaging.disks.conftest import Backup, SourceDisk, weak_repository
from tests.support import MiB, mounted, sh

pytestmark = [pytest.mark.integration, pytest.mark.root]


def test_backup_refuses_a_partition_mounted_read_write(
    gpt_source: SourceDisk, tmp_path: Path
) -> None:
    root = helpers.node(gpt_source.device, 8)
    with mounted(root, tmp_path / "rw"):
        with pytest.raises(SourceError, match="mounted read-write") as refused:
            plans.plan_for([gpt_source.device])
        assert "--force" in str(refused.value.hint)
        with pytest.raises(SourceError, match="mounted read-write"):
            plans.plan_for([root])
        forced = plans.plan_for([gpt_source.device], force=True)
        assert any("mounted read-write" in w for w in forced.extra["warnings"])
    with mounted(root, tmp_path / "ro", "ro"):
        plan = plans.plan_for([gpt_source.device])
        p8 = next(i for i in plan.images if i.name == "p8")
        assert p8.method == "partclone.ext4", "a read-only mount is fine, partclone maps it"
        assert "warnings" not in plan.extra


@pytest.fixture
def usb_repo(tmp_path: Path) -> Iterator[tuple[str, Repository]]:
    """A repository on a filesystem of its own loop disk, as on a USB backup disk."""
    image = tmp_path / "repo-disk.img"
    sh("truncate", "-s", "64M", image)
    sh("sgdisk", "--new=1:0:0", image)
    with helpers.attached(image) as disk:
        sh("mkfs.ext4", "-q", helpers.node(disk, 1))
        with mounted(helpers.node(disk, 1), tmp_path / "usb"):
            yield disk, weak_repository(tmp_path / "usb" / "backups")


def test_restore_refuses_the_disk_that_holds_the_repository(
    gpt_backup: Backup, usb_repo: tuple[str, Repository]
) -> None:
    disk, repo = usb_repo
    with pytest.raises(TargetUnsuitable, match="holds the repository"):
        check_disk_target(repo, gpt_backup.snapshot, disk)
    with pytest.raises(TargetUnsuitable, match="holds the repository"):
        check_disk_target(repo, gpt_backup.snapshot, disk, partition=8)


def test_restore_refuses_a_disk_with_a_mounted_partition(
    gpt_backup: Backup, tmp_path: Path
) -> None:
    image = tmp_path / "busy.img"
    helpers.garbage_file(image, helpers.GPT_DISK_MIB * MiB)
    sh("sgdisk", "--new=1:0:+64M", image)
    with helpers.attached(image) as disk:
        sh("mkfs.ext4", "-q", helpers.node(disk, 1))
        with mounted(helpers.node(disk, 1), tmp_path / "busy"):
            with pytest.raises(TargetUnsuitable, match="mounted read-write"):
                check_disk_target(gpt_backup.repo, gpt_backup.snapshot, disk)
            assert gpt_backup.cli("restore", "latest", disk, "--yes") == 6


def test_restore_refuses_the_boot_disk(gpt_backup: Backup) -> None:
    boot = sorted(n for n in boot_disk_names() if not n.startswith("loop"))
    if not boot:
        pytest.skip("this system was not started from a disk (/ is not on a block device)")
    assert boot[0] in mounts.disks_of_path("/")
    with pytest.raises(TargetUnsuitable, match="started from"):
        check_disk_target(gpt_backup.repo, gpt_backup.snapshot, f"/dev/{boot[0]}")


def test_a_partition_is_not_a_disk_target(gpt_backup: Backup, tmp_path: Path) -> None:
    image = tmp_path / "parts.img"
    helpers.garbage_file(image, helpers.GPT_DISK_MIB * MiB)
    sh("sgdisk", "--new=1:0:0", image)
    with (
        helpers.attached(image) as disk,
        pytest.raises(TargetUnsuitable, match="is a partition"),
    ):
        check_disk_target(gpt_backup.repo, gpt_backup.snapshot, helpers.node(disk, 1))


def test_confirmation_names_the_disk(
    gpt_source: SourceDisk, gpt_backup: Backup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --yes and without a terminal the restore refuses; the question it would ask
    names model, size, partitions and labels of the target."""
    from imaging.disks.restore import describe_target

    text = describe_target(gpt_source.device)
    assert gpt_source.device in text and "Loop device" in text
    for label in ("ESP", "XFSDATA", "BTR", "WINDOWS", "EXCHANGE", "root"):
        assert label in text
    assert "partition 8" in text
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    image = tmp_path / "ask.img"
    helpers.garbage_file(image, helpers.GPT_DISK_MIB * MiB)
    before = image.read_bytes()[:MiB]
    with helpers.attached(image) as disk:
        assert gpt_backup.cli("restore", "latest", disk) == 2
    assert image.read_bytes()[:MiB] == before


def test_partition_snapshots_use_the_map_and_the_same_protections(
    gpt_source: SourceDisk, tmp_path: Path
) -> None:
    from tests.imaging.disks.conftest import backup_of

    ext4 = next(p for p in gpt_source.parts if p.fstype == "ext4")
    backup = backup_of(helpers.node(gpt_source.device, ext4.number), tmp_path)
    snap = backup.snapshot
    assert snap.kind == "partition"
    assert snap.images[0].method == "partclone.ext4"
    assert snap.source_id.startswith("fs:")
    assert snap.manifest["partition"]["number"] == ext4.number
    image = tmp_path / "two.img"
    helpers.garbage_file(image, 160 * MiB)
    sh("sgdisk", "--new=1:0:+120M", "--new=2:0:0", image)
    with helpers.attached(image) as disk:
        sh("mkfs.ext4", "-q", helpers.node(disk, 2))
        with mounted(helpers.node(disk, 2), tmp_path / "other"):
            assert backup.cli("restore", "latest", helpers.node(disk, 1), "--yes") == 6
        assert backup.cli("restore", "latest", helpers.node(disk, 1), "--yes") == 0
        assert helpers.fsck(helpers.node(disk, 1), "ext4").returncode == 0
        assert helpers.read_files(helpers.node(disk, 1), "ext4", tmp_path) == ext4.files
