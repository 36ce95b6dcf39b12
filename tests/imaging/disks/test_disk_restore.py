"""Whole-disk backup and restore on loop devices with real filesystems, files and tools."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from imaging.disks import restore as disk_restore
from imaging.disks.table import read_table
from imaging.errors import TargetTooSmall
from imaging.image.restore import RestoreOptions
from tests.imaging.disks import helpers
from tests.imaging.disks.conftest import Backup, SourceDisk
from tests.support import MiB, sh

pytestmark = [pytest.mark.integration, pytest.mark.root]


def check_filesystems(source: SourceDisk, device: str, tmp: Path) -> None:
    """Every filesystem passes its own checker and holds exactly the source's files."""
    for p in source.parts:
        if not p.fstype:
            continue
        dev = helpers.node(device, p.number)
        check = helpers.fsck(dev, p.fstype)
        assert check.returncode == 0, f"{p.fstype} on {dev}: {check.stdout}{check.stderr}"
        files = helpers.read_files(dev, p.fstype, tmp)
        assert files == p.files, f"files differ on partition {p.number} ({p.fstype})"
        assert files, "the test filesystem should hold files"
        source_uuid = sh(
            "blkid", "-p", "-o", "value", "-s", "UUID", helpers.node(source.device, p.number)
        ).stdout
        assert sh("blkid", "-p", "-o", "value", "-s", "UUID", dev).stdout == source_uuid


def target_disk(tmp: Path, name: str, mib: int) -> Path:
    image = tmp / name
    helpers.garbage_file(image, mib * MiB)
    return image


def test_snapshot_records_table_methods_and_used_blocks(
    gpt_source: SourceDisk, gpt_backup: Backup
) -> None:
    snap = gpt_backup.snapshot
    assert snap.kind == "disk"
    names = [image.name for image in snap.images]
    assert names == ["head", "p1", "p2", "p3", "p4", "p5", "p6", "p8"]
    methods = {image.name: image.method for image in snap.images}
    assert methods == {
        "head": "raw",
        "p1": "raw",
        "p2": "partclone.vfat",
        "p3": "partclone.xfs",
        "p4": "partclone.btrfs",
        "p5": "partclone.ntfs",
        "p6": "partclone.exfat",
        "p8": "partclone.ext4",
    }
    for image in snap.images:
        if image.method and image.method.startswith("partclone"):
            assert image.used is not None and 0 < image.used < image.size, image
    table = read_table(gpt_source.device)
    assert table is not None
    assert snap.manifest["disk"]["table"] == table.to_dict()
    assert snap.source_id == f"disk:{gpt_source.device}"  # a loop device has no serial
    stats = snap.manifest["stats"]
    assert stats["unused_bytes"] > stats["read"], "most of the disk is free and was not read"


def test_restore_to_same_size_disk(
    gpt_source: SourceDisk, gpt_backup: Backup, tmp_path: Path
) -> None:
    image = target_disk(tmp_path, "same.img", helpers.GPT_DISK_MIB)
    with helpers.attached(image) as target:
        assert gpt_backup.cli("restore", "latest", target, "--yes") == 0
        assert helpers.table_dump(target) == gpt_source.table
        head = helpers.read_bytes(target, 0, MiB)
        assert head[:440] == gpt_source.head[:440], "boot code"
        assert head[512:] == gpt_source.head[512:], "GPT header, entries and gap"
        end = helpers.GPT_DISK_MIB * MiB
        assert helpers.read_bytes(target, end - 33 * 512, 33 * 512) == helpers.read_bytes(
            gpt_source.device, end - 33 * 512, 33 * 512
        ), "backup GPT"
        assert helpers.read_bytes(helpers.node(target, 1), 0, MiB) == gpt_source.raw[1]
        check_filesystems(gpt_source, target, tmp_path)


def rows_by_number(device: str) -> dict[int, list[str]]:
    """partx's rows by partition number: NR, START, SECTORS, TYPE, UUID, NAME, FLAGS."""
    rows = helpers.table_dump(device).splitlines()[2:]
    return {int(row.split()[0]): row.split() for row in rows}


def test_restore_to_larger_disk_grows_the_largest_data_partition(
    gpt_source: SourceDisk, gpt_backup: Backup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plan grows the xfs partition (the largest data filesystem) and moves the four
    partitions after it to the end of the disk, unchanged and in order."""
    image = target_disk(tmp_path, "large.img", helpers.GPT_DISK_MIB + 200)
    with helpers.attached(image) as target:
        capsys.readouterr()
        assert gpt_backup.cli("restore", "latest", target, "--yes", "--grow") == 0
        out = capsys.readouterr()
        before, after = rows_by_number(gpt_source.device), rows_by_number(target)
        assert after[1] == before[1] and after[2] == before[2], "before the grown one: as it was"
        delta = int(after[3][2]) - int(before[3][2])
        assert delta >= 199 * 2048 and delta % 2048 == 0
        assert after[3][:2] == before[3][:2] and after[3][3:] == before[3][3:]
        for number in (4, 5, 6, 8):
            assert int(after[number][1]) == int(before[number][1]) + delta, f"p{number} moved"
            assert after[number][2:] == before[number][2:], f"p{number}: same size, GUID, name"
        end = (helpers.GPT_DISK_MIB + 200) * MiB // 512
        assert end - (int(after[8][1]) + int(after[8][2])) < 2048 + 34, "p8 ends at the end"
        assert "No problems found" in sh("sgdisk", "--verify", target).stdout
        assert (
            helpers.fs_size(helpers.node(target, 3), "xfs")
            > helpers.fs_size(helpers.node(gpt_source.device, 3), "xfs") + 190 * MiB
        )
        assert "Partition 3 grows" in out.out and "Partition 8 (" in out.out, out.out
        assert "xfs grown" in out.out
        assert helpers.read_bytes(helpers.node(target, 1), 0, MiB) == gpt_source.raw[1]
        check_filesystems(gpt_source, target, tmp_path)


def test_grow_partition_names_the_one_to_grow(
    gpt_source: SourceDisk, gpt_backup: Backup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = target_disk(tmp_path, "large8.img", helpers.GPT_DISK_MIB + 120)
    with helpers.attached(image) as target:
        assert gpt_backup.cli("restore", "latest", target, "--yes", "--grow-partition", "8") == 0
        before, after = rows_by_number(gpt_source.device), rows_by_number(target)
        assert all(after[n] == before[n] for n in (1, 2, 3, 4, 5, 6))
        assert int(after[8][2]) >= int(before[8][2]) + 119 * 2048
        assert helpers.fs_size(helpers.node(target, 8), "ext4") > 96 * MiB + 110 * MiB
        check_filesystems(gpt_source, target, tmp_path)
        capsys.readouterr()
        assert gpt_backup.cli("restore", "latest", target, "--yes", "--grow-partition", "7") == 2
        assert "no partition 7" in capsys.readouterr().err
        assert rows_by_number(target) == after, "a refused plan writes nothing"


def test_too_small_disk_is_refused_with_the_size_needed(
    gpt_backup: Backup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = target_disk(tmp_path, "small.img", helpers.GPT_DISK_MIB - 100)
    before = image.read_bytes()[: 2 * MiB]
    with helpers.attached(image) as target:
        code = gpt_backup.cli("restore", "latest", target, "--yes")
        needed = read_table_of(gpt_backup).required_size()
    assert code == TargetTooSmall.exit_code
    err = capsys.readouterr().err
    # xfs (the largest) cannot go under 300 MiB: no shrink plan fits, the whole layout is named
    assert "smaller than" in err and str(needed) in err and "Partition 3 (xfs)" in err
    assert image.read_bytes()[: 2 * MiB] == before, "nothing was written"


def read_table_of(backup: Backup):  # type: ignore[no-untyped-def]
    return disk_restore.snapshot_table(backup.snapshot)


def test_smaller_disk_where_every_partition_fits(
    gpt_source: SourceDisk, gpt_backup: Backup, tmp_path: Path
) -> None:
    needed = read_table_of(gpt_backup).required_size()
    image = target_disk(tmp_path, "fits.img", -(-needed // MiB))
    assert image.stat().st_size < helpers.GPT_DISK_MIB * MiB
    with helpers.attached(image) as target:
        result = disk_restore.restore_disk(
            gpt_backup.repo, gpt_backup.snapshot, target, options=RestoreOptions(verify=False)
        )
        assert not result.verified
        assert helpers.table_dump(target).splitlines()[1:] == gpt_source.table.splitlines()[1:]
        check_filesystems(gpt_source, target, tmp_path)


def test_new_ids(gpt_source: SourceDisk, gpt_backup: Backup, tmp_path: Path) -> None:
    image = target_disk(tmp_path, "new-ids.img", helpers.GPT_DISK_MIB)
    with helpers.attached(image) as target:
        assert gpt_backup.cli("restore", "latest", target, "--yes", "--new-ids") == 0
        old = read_table(gpt_source.device)
        new = read_table(target)
        assert old is not None and new is not None
        assert new.disk_id != old.disk_id
        for a, b in zip(old.partitions, new.partitions, strict=True):
            assert (a.number, a.start, a.end, a.type, a.name) == (
                b.number,
                b.start,
                b.end,
                b.type,
                b.name,
            )
            assert a.guid != b.guid
        for p in gpt_source.parts:
            if p.fstype:  # each filesystem its own tool can give a new UUID, checked clean
                dev = helpers.node(target, p.number)
                source = helpers.node(gpt_source.device, p.number)
                uuid = sh("blkid", "-p", "-o", "value", "-s", "UUID", dev).stdout
                assert uuid != sh("blkid", "-p", "-o", "value", "-s", "UUID", source).stdout
                check = helpers.fsck(dev, p.fstype)
                assert check.returncode == 0, f"{p.fstype}: {check.stdout}{check.stderr}"


def test_single_partitions_into_larger_partitions_grow(
    gpt_source: SourceDisk, gpt_backup: Backup, tmp_path: Path
) -> None:
    """xfs and NTFS restored alone into bigger partitions of another disk, then grown."""
    image = tmp_path / "parts.img"
    helpers.garbage_file(image, 600 * MiB)
    sh("sgdisk", "--new=1:0:+400M", "--new=2:0:+120M", image)
    with helpers.attached(image) as target:
        for number, into, fstype in ((3, 1, "xfs"), (5, 2, "ntfs")):
            dev = helpers.node(target, into)
            snap = f"{gpt_backup.snapshot.id}:{number}"
            assert gpt_backup.cli("restore", snap, dev, "--yes", "--grow") == 0
            assert helpers.fsck(dev, fstype).returncode == 0
            source_size = helpers.fs_size(helpers.node(gpt_source.device, number), fstype)
            assert helpers.fs_size(dev, fstype) > source_size + 50 * MiB
            part = next(p for p in gpt_source.parts if p.number == number)
            assert helpers.read_files(dev, fstype, tmp_path) == part.files


def test_single_partition_to_an_empty_disk_and_to_a_file(
    gpt_source: SourceDisk, gpt_backup: Backup, tmp_path: Path
) -> None:
    image = target_disk(tmp_path, "empty.img", helpers.GPT_DISK_MIB)
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(helpers.attached(image))
        code = gpt_backup.cli("restore", f"{gpt_backup.snapshot.id[:8]}:8", target, "--yes")
        assert code == 0
        table = read_table(target)
        source = read_table(gpt_source.device)
        assert table is not None and source is not None
        assert table.partitions == (source.partition(8),)
        assert table.disk_id == source.disk_id
        dev = helpers.node(target, 8)
        assert helpers.fsck(dev, "ext4").returncode == 0
        assert helpers.read_files(dev, "ext4", tmp_path) == gpt_source.parts[-1].files
    out = tmp_path / "btrfs-alone.img"
    assert gpt_backup.cli("restore", "latest:4", str(out), "--yes") == 0
    assert out.stat().st_size == 128 * MiB
    assert helpers.fsck(str(out), "btrfs").returncode == 0


def test_partition_restore_needs_room(gpt_backup: Backup, tmp_path: Path) -> None:
    image = tmp_path / "tiny-parts.img"
    helpers.garbage_file(image, 100 * MiB)
    sh("sgdisk", "--new=1:0:+50M", image)
    with (
        helpers.attached(image) as target,
        pytest.raises(TargetTooSmall, match="too small for partition 3"),
    ):
        disk_restore.check_disk_target(
            gpt_backup.repo, gpt_backup.snapshot, helpers.node(target, 1), partition=3
        )


def test_one_partition_too_far_out_for_an_empty_disk_says_so_plainly(
    gpt_backup: Backup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = target_disk(tmp_path, "empty-small.img", helpers.GPT_DISK_MIB - 100)
    with helpers.attached(image) as target:
        capsys.readouterr()
        code = gpt_backup.cli("restore", "latest:8", target, "--yes")
    assert code == TargetTooSmall.exit_code
    err = capsys.readouterr().err
    assert f"{target} (" in err
    assert "is too small for partition 8 at its place on the snapshot's disk: that needs" in err
    assert "where it was needs" not in err
    assert "Choose a larger partition or disk." in err


def test_mbr_disk_same_size_and_larger_with_grow(
    mbr_source: SourceDisk, mbr_backup: Backup, tmp_path: Path
) -> None:
    snap = mbr_backup.snapshot
    assert [i.name for i in snap.images] == ["head", "p1", "p2", "p5", "p6"]
    table = snap.manifest["disk"]["table"]
    assert table["signature"] == f"{helpers.MBR_SIGNATURE:#010x}"
    roles = {p["number"]: (p["role"], p["type"], p["boot"]) for p in table["partitions"]}
    assert roles == {
        1: ("primary", "0x0c", True),
        2: ("primary", "0x83", False),
        4: ("extended", "0x05", False),
        5: ("logical", "0x83", False),
        6: ("logical", "0x83", False),
    }
    same = target_disk(tmp_path, "mbr-same.img", helpers.MBR_DISK_MIB)
    with helpers.attached(same) as target:
        assert mbr_backup.cli("restore", "latest", target, "--yes") == 0
        assert helpers.table_dump(target) == mbr_source.table
        head = helpers.read_bytes(target, 0, MiB)
        assert head[:446] == mbr_source.head[:446], "boot code and signature"
        assert head[512:] == mbr_source.head[512:], "the gap (core.img)"
        check_filesystems(mbr_source, target, tmp_path)
    larger = target_disk(tmp_path, "mbr-large.img", helpers.MBR_DISK_MIB + 150)
    with helpers.attached(larger) as target:
        assert mbr_backup.cli("restore", "latest", target, "--yes", "--grow") == 0
        grown = read_table(target)
        assert grown is not None
        # the last logical grows, its container with it; the 1 MiB left between their ends
        # in the original is left as it was
        original = read_table(mbr_source.device)
        assert original is not None
        gap = original.partition(4).end - original.partition(6).end
        assert grown.partition(4).end - grown.partition(6).end == gap == 2048
        assert grown.partition(4).end >= (helpers.MBR_DISK_MIB + 149) * 2048 - 1
        assert grown.disk_id == f"{helpers.MBR_SIGNATURE:#010x}"
        last = helpers.node(target, 6)
        assert helpers.fs_size(last, "btrfs") > 128 * MiB + 140 * MiB
        check_filesystems(mbr_source, target, tmp_path)


def test_partitions_of_one_disk_back_up_with_the_table(
    gpt_source: SourceDisk, tmp_path: Path
) -> None:
    from tests.imaging.disks.conftest import backup_of

    dev = gpt_source.device
    backup = backup_of(helpers.node(dev, 2), tmp_path, helpers.node(dev, 8))
    snap = backup.snapshot
    assert snap.kind == "disk"
    assert [i.name for i in snap.images] == ["head", "p2", "p8"]
    assert snap.manifest["disk"]["imaged"] == [2, 8]
    image = target_disk(tmp_path, "partial.img", helpers.GPT_DISK_MIB)
    with helpers.attached(image) as target:
        assert backup.cli("restore", "latest", target, "--yes") == 0
        assert helpers.table_dump(target) == gpt_source.table
        for p in gpt_source.parts:
            if p.number in (2, 8):
                assert (
                    helpers.read_files(helpers.node(target, p.number), p.fstype, tmp_path)
                    == p.files
                )


@pytest.mark.slow
@pytest.mark.parametrize(("named", "less"), [(None, 12), (2, 8)])
def test_mbr_disk_to_a_smaller_disk_shrinks_a_logical_or_moves_the_container(
    mbr_source: SourceDisk,
    mbr_backup: Backup,
    tmp_path: Path,
    named: int | None,
    less: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Legacy MBR with logical partitions to a smaller disk. The largest filesystem,
    the 128 MiB btrfs in the last logical, cannot shrink (btrfs's floor is above it), so
    the plan takes the next largest, the ext4 in logical 5: the btrfs after it moves back and
    the extended container ends earlier. `--resize-partition 2` shrinks the primary ext4
    before the container instead, and the container moves back whole with its logicals.
    The boot code, signature and gap stay; every filesystem checks clean with its files and
    UUID."""
    disk_mib = helpers.MBR_DISK_MIB - less
    smaller = target_disk(tmp_path, "mbr-small.img", disk_mib)
    extra = () if named is None else ("--resize-partition", str(named))
    with helpers.attached(smaller) as target:
        capsys.readouterr()
        started = time.monotonic()
        code = mbr_backup.cli("restore", "latest", target, "--yes", *extra)
        elapsed = time.monotonic() - started
        out, err = capsys.readouterr()
        assert code == 0, out + err
        shrunk = named or 5
        assert f"Partition {shrunk} shrinks from" in out and "resize2fs" in out, out
        original, after = read_table(mbr_source.device), read_table(target)
        assert original is not None and after is not None
        container = after.partition(4)
        assert container.end <= disk_mib * 2048 - 1
        assert all(container.start < after.partition(n).start for n in (5, 6))
        assert container.end >= after.partition(6).end, "the container holds its logicals"
        assert after.partition(1) == original.partition(1)
        assert after.partition(shrunk).start == original.partition(shrunk).start
        assert after.partition(shrunk).sectors < original.partition(shrunk).sectors
        moved = [6] if shrunk == 5 else [4, 5, 6]
        for n in moved:
            back = original.partition(n).start - after.partition(n).start
            assert back >= (less - 2) * 2048, n  # 2 MiB of the original were free at its end
            if n != 4:
                assert after.partition(n).sectors == original.partition(n).sectors, n
        if shrunk == 5:
            assert container.start == original.partition(4).start
            assert after.partition(2) == original.partition(2)
        assert after.disk_id == f"{helpers.MBR_SIGNATURE:#010x}"
        head = helpers.read_bytes(target, 0, MiB)
        assert head[:446] == mbr_source.head[:446], "boot code and signature"
        assert head[512:] == mbr_source.head[512:], "the gap (core.img)"
        check_filesystems(mbr_source, target, tmp_path)
        with capsys.disabled():
            print(
                f"\n[shrink] MBR {helpers.MBR_DISK_MIB} -> {disk_mib} MiB, partition {shrunk} "
                f"{original.partition(shrunk).sectors // 2048} -> "
                f"{after.partition(shrunk).sectors // 2048} MiB, moved {moved}: {elapsed:.1f} s"
            )
