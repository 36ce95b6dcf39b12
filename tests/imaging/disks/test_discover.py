"""Discovery, repository search and hotplug events against real loop devices."""

from __future__ import annotations

import os
import queue
from pathlib import Path

import pytest

from imaging.disks import discover
from imaging.disks.repos import PROBE_ROOT, find_repositories
from imaging.disks.watch import DiskWatcher
from imaging.errors import UsageError
from tests.imaging.disks import helpers
from tests.imaging.disks.conftest import SourceDisk, weak_repository
from tests.support import MiB, mounted, sh

# Never beside another of these (tests/conftest.py, xdist): a killed FUSE daemon's mount
# still names its loop partition until it is cleaned up, and discovery on the other worker
# then took a reused device of that name for mounted.
pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.xdist_group("dead-fuse")]


def test_get_disk_describes_a_gpt_disk(gpt_source: SourceDisk) -> None:
    disk = discover.get_disk(gpt_source.device)
    assert disk.device == gpt_source.device
    assert disk.transport == "loop"
    assert disk.backing_file == str(gpt_source.image)
    assert disk.size == helpers.GPT_DISK_MIB * MiB
    assert (disk.logical_sector, disk.table) == (512, "gpt")
    assert (
        disk.table_id
        == sh("blkid", "-p", "-o", "value", "-s", "PTUUID", disk.device).stdout.strip()
    )
    assert [p.number for p in disk.partitions] == [p.number for p in gpt_source.parts]
    for found, made in zip(disk.partitions, gpt_source.parts, strict=True):
        assert found.device == helpers.node(gpt_source.device, made.number)
        assert found.fstype == made.fstype
        assert found.label == made.label
        assert found.name == made.name
        if made.fstype:
            assert found.used is not None and 0 < found.used < found.size
            assert found.fs_uuid
        partuuid = sh("blkid", "-p", "-o", "value", "-s", "PART_ENTRY_UUID", found.device)
        assert found.uuid == partuuid.stdout.strip()
    esp = disk.partitions[1]
    assert (esp.type, esp.type_name) == ("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI System")
    assert esp.start == 2 * MiB and esp.size == 64 * MiB
    text = disk.describe()
    assert "Loop device" in text and '"XFSDATA"' in text and "partition 8" in text


def test_a_partition_is_not_a_disk(gpt_source: SourceDisk) -> None:
    with pytest.raises(UsageError, match="is partition 3 of"):
        discover.get_disk(helpers.node(gpt_source.device, 3))


def test_image_files_are_described_like_disks(gpt_source: SourceDisk) -> None:
    disk = discover.get_disk(str(gpt_source.image))
    assert disk.transport == "file" and disk.table == "gpt"
    assert [(p.number, p.fstype, p.label) for p in disk.partitions] == [
        (p.number, p.fstype, p.label) for p in gpt_source.parts
    ]
    assert all(p.device == "" for p in disk.partitions)


def test_list_disks_marks_boot_disk_and_repositories(
    gpt_source: SourceDisk, tmp_path: Path
) -> None:
    image = tmp_path / "usb.img"
    sh("truncate", "-s", "64M", image)
    sh("sgdisk", "--new=1:0:0", image)
    with helpers.attached(image) as usb:
        sh("mkfs.ext4", "-q", "-L", "BACKUP", helpers.node(usb, 1))
        with mounted(helpers.node(usb, 1), tmp_path / "usb") as root:
            weak_repository(root / "hourglass")
            disks = {d.device: d for d in discover.list_disks()}
            assert gpt_source.device in disks
            assert disks[usb].repositories == (str(root / "hourglass"),)
            assert disks[usb].holds_repository
            assert not disks[gpt_source.device].holds_repository
            boot = [d for d in disks.values() if d.is_boot_disk]
            under_root = {f"/dev/{n}" for n in discover.boot_disk_names()}
            assert {d.device for d in boot} == under_root & set(disks)
            found = find_repositories([disks[usb]])
            assert [(f.path, f.disk, f.partition, f.mounted_by_us) for f in found] == [
                (str(root / "hourglass"), usb, 1, False)
            ]
        # unmounted now: only a probe finds it, mounting it read-only to look
        assert find_repositories([discover.get_disk(usb)]) == []
        probed = find_repositories([discover.get_disk(usb)], probe=True)
        assert len(probed) == 1
        found_repo = probed[0]
        assert found_repo.mounted_by_us and found_repo.partition == 1
        where = PROBE_ROOT / os.path.basename(helpers.node(usb, 1))
        assert found_repo.path == str(where / "hourglass")
        assert (Path(found_repo.path) / "config").is_file()
        mount = next(m for m in proc_mounts() if m[1] == str(where))
        assert "ro" in mount[3].split(",")
        found_repo.release()
        assert not Path(found_repo.path).exists()


def proc_mounts() -> list[list[str]]:
    return [line.split() for line in Path("/proc/mounts").read_text().splitlines()]


def test_watcher_reports_disks_appearing_and_going(tmp_path: Path) -> None:
    image = tmp_path / "hotplug.img"
    sh("truncate", "-s", "32M", image)
    sh("sgdisk", "--new=1:0:0", image)
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    watcher = DiskWatcher(lambda action, device: events.put((action, device)))
    watcher.start()
    try:
        with helpers.attached(image) as device:
            seen = drain(events, {("add", device), ("add", helpers.node(device, 1))})
            assert ("add", device) in seen and ("add", helpers.node(device, 1)) in seen
        seen = drain(events, {("remove", device), ("remove", helpers.node(device, 1))})
        assert ("remove", device) in seen and ("remove", helpers.node(device, 1)) in seen
    finally:
        watcher.stop()


def drain(
    events: queue.Queue[tuple[str, str]], wanted: set[tuple[str, str]]
) -> set[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    while not wanted <= seen:
        try:
            seen.add(events.get(timeout=5))
        except queue.Empty:
            break
    return seen


def test_partition_facts_are_probed_once_until_the_partition_changes(tmp_path: Path) -> None:
    """blkid and partclone run once per partition however often the disk is listed; a write
    to the partition (a new filesystem) makes the next listing ask again."""
    from imaging.disks import facts

    image = tmp_path / "facts.img"
    sh("truncate", "-s", "48M", image)
    sh("sgdisk", "--clear", "--new=1:0:+20M", "--typecode=1:ef00", "--new=2:0:0", image)
    with helpers.attached(image) as device:
        esp, data = helpers.node(device, 1), helpers.node(device, 2)
        helpers.make_fs(esp, "vfat", "ESP")
        helpers.make_fs(data, "ext4", "DATA")
        facts.CACHE.clear()
        for _ in range(3):
            disk = discover.get_disk(device)
        assert [p.fstype for p in disk.partitions] == ["vfat", "ext4"]
        assert disk.partitions[0].used is not None
        assert facts.CACHE.probes[("blkid", esp)] == 1
        assert facts.CACHE.probes[("used", esp)] == 1
        assert facts.CACHE.probes[("blkid", data)] == 1

        helpers.make_fs(esp, "ext4", "NOWEXT4")
        disk = discover.get_disk(device)
        assert [(p.fstype, p.label) for p in disk.partitions] == [
            ("ext4", "NOWEXT4"),
            ("ext4", "DATA"),
        ]
        assert facts.CACHE.probes[("blkid", esp)] == 2
        assert facts.CACHE.probes[("blkid", data)] == 1  # the other partition did not change
