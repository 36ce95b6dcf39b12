"""The grow plan (imaging.disks.resize): which partition takes a larger disk's room, and
where the others go. Tables as the snapshot records them; the restores that write them are
in test_disk_restore.py and below (a Windows 11 layout on loop devices)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaging.disks.resize import BIOS_BOOT, default_partition, plan_grow, plan_shrink
from imaging.disks.table import PartitionTable, TablePartition
from imaging.errors import TargetTooSmall, UsageError
from tests.imaging.disks import helpers
from tests.imaging.disks.conftest import backup_of, need_tools
from tests.support import MiB, sh

ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
MSR = "e3c9e316-0b5c-4db8-817d-f92df00215ae"
BASIC = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"
RECOVERY = "de94bba4-06d1-4d40-a16a-bfd50179d6ac"
LINUX = "0fc63daf-8483-4772-8e79-3d69d8477de4"
SWAP = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"
M = 2048  # sectors per MiB


def gpt(*parts: tuple[int, int, int, str]) -> PartitionTable:
    """(number, start MiB, size MiB, type) each."""
    return PartitionTable(
        kind="gpt",
        sector_size=512,
        disk_id="00000000-0000-0000-0000-000000000001",
        partitions=tuple(
            TablePartition(n, start * M, (start + size) * M - 1, kind)
            for n, start, size, kind in parts
        ),
        first_usable=34,
        last_usable=0,
    )


WINDOWS = gpt((1, 1, 100, ESP), (2, 101, 16, MSR), (3, 117, 1000, BASIC), (4, 1117, 300, RECOVERY))
WINDOWS_FS = {1: "vfat", 3: "ntfs", 4: "ntfs"}


def test_windows_grows_c_and_moves_recovery_to_the_end() -> None:
    assert default_partition(WINDOWS, WINDOWS_FS) == 3
    disk = 2000 * MiB
    plan = plan_grow(WINDOWS, WINDOWS_FS, disk)
    c, recovery = plan.after.partition(3), plan.after.partition(4)
    assert plan.grown == c and plan.moved == (recovery,)
    assert recovery.sectors == WINDOWS.partition(4).sectors, "Recovery keeps its size"
    assert (recovery.end + 1) * 512 + WINDOWS.backup_area() <= disk
    assert disk - (recovery.end + 1) * 512 < MiB + WINDOWS.backup_area(), "at the very end"
    assert c.start == WINDOWS.partition(3).start and c.end + 1 == recovery.start
    assert plan.after.partition(1) == WINDOWS.partition(1)
    assert plan.after.partition(2) == WINDOWS.partition(2)
    assert plan.lines()[0].startswith("Partition 3 grows from ")
    assert "Partition 4 (Windows recovery, " in plan.lines()[1]


def test_dual_boot_grows_the_largest_and_keeps_the_gaps() -> None:
    table = gpt(
        (1, 1, 100, ESP),
        (2, 101, 800, BASIC),
        (3, 905, 300, LINUX),
        (4, 1205, 64, SWAP),
        (5, 1270, 500, LINUX),
    )
    fs = {1: "vfat", 2: "ntfs", 3: "ext4", 5: "ext4"}
    plan = plan_grow(table, fs, 3000 * MiB)
    assert plan.grown is not None and plan.grown.number == 2
    delta = plan.after.partition(3).start - table.partition(3).start
    assert delta > 0 and delta % M == 0
    for n in (3, 4, 5):
        assert plan.after.partition(n).start == table.partition(n).start + delta
        assert plan.after.partition(n).sectors == table.partition(n).sectors
    assert plan_grow(table, fs, 3000 * MiB, 5).moved == (), "--grow-partition: the last"


def test_bios_boot_never_moves() -> None:
    table = gpt((1, 1, 500, LINUX), (2, 501, 1, BIOS_BOOT), (3, 502, 100, LINUX))
    fs = {1: "ext4", 3: "ext4"}
    assert default_partition(table, fs) == 3, "p1 is larger, but p2 would move"
    plan = plan_grow(table, fs, 2000 * MiB)
    assert plan.grown is not None and plan.grown.number == 3
    assert plan.after.partition(2) == table.partition(2)
    with pytest.raises(UsageError, match="BIOS boot"):
        plan_grow(table, fs, 2000 * MiB, 1)


def test_no_room_and_no_data_filesystem() -> None:
    plan = plan_grow(WINDOWS, WINDOWS_FS, WINDOWS.required_size())
    assert plan.grown is None and plan.after == WINDOWS and "no larger" in plan.notes[0]
    only_raw = plan_grow(WINDOWS, {}, 4000 * MiB)
    assert only_raw.grown is not None and only_raw.grown.number == 4, "the last, as before"
    with pytest.raises(UsageError, match="no partition 9"):
        plan_grow(WINDOWS, WINDOWS_FS, 4000 * MiB, 9)


def mbr(n: int, start: int, size: int, kind: str, role: str) -> TablePartition:
    return TablePartition(n, start * M, (start + size) * M - 1, kind, role=role)


# NTFS primary, then an extended container holding two ext4 and a swap
MBR_LOGICALS = PartitionTable(
    kind="msdos",
    sector_size=512,
    disk_id="0x12345678",
    partitions=(
        mbr(1, 1, 100, "0x07", "primary"),
        mbr(2, 101, 900, "0x05", "extended"),
        mbr(5, 102, 600, "0x83", "logical"),
        mbr(6, 703, 200, "0x83", "logical"),
        mbr(7, 904, 90, "0x82", "logical"),
    ),
)


def test_mbr_logical_grows_inside_its_container_and_the_rest_moves() -> None:
    table = MBR_LOGICALS
    fs = {1: "ntfs", 5: "ext4", 6: "ext4"}
    plan = plan_grow(table, fs, 2000 * MiB)
    assert plan.grown is not None and plan.grown.number == 5
    container = plan.after.partition(2)
    assert container.start == table.partition(2).start
    assert container.end >= plan.after.partition(7).end, "the container holds its logicals"
    delta = plan.after.partition(6).start - table.partition(6).start
    assert delta > 0 and plan.after.partition(7).start == table.partition(7).start + delta
    # a primary grown before the container: the container moves whole
    plan = plan_grow(table, fs, 2000 * MiB, 1)
    delta = plan.after.partition(2).start - table.partition(2).start
    assert delta > 0
    for n in (2, 5, 6, 7):
        assert plan.after.partition(n).start == table.partition(n).start + delta


WINDOWS_USED = {1: 2 * MiB, 3: 100 * MiB, 4: 20 * MiB}


def test_smaller_disk_shrinks_c_and_moves_recovery_back() -> None:
    """Half the disk: C: gives up what the disk lacks, Recovery keeps its size and ends at
    the new end; ESP and MSR stay where they were."""
    disk = 800 * MiB
    plan = plan_shrink(WINDOWS, WINDOWS_FS, WINDOWS_USED, disk)
    c, recovery = plan.after.partition(3), plan.after.partition(4)
    assert plan.shrinks and plan.grown == c and plan.moved == (recovery,)
    assert c.start == WINDOWS.partition(3).start and c.end + 1 == recovery.start
    assert c.sectors < WINDOWS.partition(3).sectors and c.sectors % M == 0
    assert recovery.sectors == WINDOWS.partition(4).sectors
    assert plan.after.required_size() <= disk < plan.after.required_size() + 2 * MiB
    assert plan.after.partition(1) == WINDOWS.partition(1)
    assert plan.after.partition(2) == WINDOWS.partition(2)
    assert plan.needed >= 100 * MiB and plan.fstype == "ntfs"
    assert plan.lines()[0].startswith("Partition 3 shrinks from 1.0 GB to ")
    assert "ntfsresize" in plan.lines()[0]
    assert "Partition 4 (Windows recovery, " in plan.lines()[1]


def test_too_small_for_the_data_names_the_size_it_needs() -> None:
    with pytest.raises(TargetTooSmall) as refused:
        plan_shrink(WINDOWS, WINDOWS_FS, WINDOWS_USED, 500 * MiB, target="/dev/sdz")
    message = refused.value.message
    needed = int(message.split("needs (")[1].split(", ")[1].split()[0])
    assert "/dev/sdz" in message and "Partition 3 (ntfs)" in str(refused.value.hint)
    # the size named is the smallest disk the plan takes, in whole MiB
    assert plan_shrink(WINDOWS, WINDOWS_FS, WINDOWS_USED, needed).grown is not None
    with pytest.raises(TargetTooSmall):
        plan_shrink(WINDOWS, WINDOWS_FS, WINDOWS_USED, needed - MiB)


def test_shrink_chooses_what_can_shrink_and_refuses_the_rest() -> None:
    table = gpt((1, 1, 1, BIOS_BOOT), (2, 2, 400, LINUX), (3, 402, 32, SWAP), (4, 434, 600, LINUX))
    fs = {2: "ext4", 4: "xfs"}
    used = {2: 20 * MiB, 4: 30 * MiB}
    plan = plan_shrink(table, fs, used, 800 * MiB)
    assert plan.grown is not None and plan.grown.number == 4, "the largest: xfs /home"
    assert "made anew" in plan.lines()[0] and plan.moved == ()
    assert plan.needed == 300 * MiB, "no xfs under 300 MiB"
    plan = plan_shrink(table, fs, used, 800 * MiB, 2)
    assert plan.grown is not None and plan.grown.number == 2 and plan.fstype == "ext4"
    assert [p.number for p in plan.moved] == [3, 4]
    assert plan.after.partition(1) == table.partition(1), "BIOS boot never moves"
    with pytest.raises(TargetTooSmall, match="cannot shrink"):
        plan_shrink(gpt((1, 1, 500, ESP)), {1: "vfat"}, {1: MiB}, 300 * MiB, 1)
    with pytest.raises(TargetTooSmall, match="No partition holds"):
        plan_shrink(gpt((1, 1, 500, BASIC)), {1: "exfat"}, {1: MiB}, 300 * MiB)


def test_mbr_logical_shrinks_inside_its_container_and_the_rest_moves_back() -> None:
    table = MBR_LOGICALS
    plan = plan_shrink(table, {1: "ntfs", 5: "ext4", 6: "ext4"}, {5: 50 * MiB}, 700 * MiB)
    assert plan.grown is not None and plan.grown.number == 5
    delta = table.partition(6).start - plan.after.partition(6).start
    assert delta >= 300 * M and plan.after.partition(7).start == table.partition(7).start - delta
    container = plan.after.partition(2)
    assert container.start == table.partition(2).start
    assert container.end == table.partition(2).end - delta, "the container shrinks with it"
    assert (container.end + 1) * 512 <= 700 * MiB


WIN11 = helpers.WIN11_LAYOUT
WIN11_MIB = 1 + sum(p.size_mib for p in WIN11) + 2


@pytest.mark.integration
@pytest.mark.root
def test_windows_11_layout_to_a_larger_disk(tmp_path: Path) -> None:
    """ESP, MSR, C:, Recovery (the issue's case): C: grows (ntfsresize), Recovery moves to
    the end as it was (same volume, size and files), and every filesystem checks clean."""
    need_tools()
    image = tmp_path / "win11.img"
    helpers.make_gpt_disk(image, WIN11, WIN11_MIB)
    with helpers.attached(image) as device:
        files = helpers.make_filesystems(device, WIN11, tmp_path, 4 * MiB)
        recovery = sh("blkid", "-p", "-o", "value", "-s", "UUID", helpers.node(device, 4)).stdout
        c_size = helpers.fs_size(helpers.node(device, 3), "ntfs")
        backup = backup_of(device, tmp_path)
    target_image = tmp_path / "larger.img"
    helpers.garbage_file(target_image, (WIN11_MIB + 300) * MiB)
    with helpers.attached(str(target_image)) as target:
        assert backup.cli("restore", "latest", target, "--yes", "--grow") == 0
        assert "No problems found" in sh("sgdisk", "--verify", target).stdout
        moved = sh("blkid", "-p", "-o", "value", "-s", "UUID", helpers.node(target, 4)).stdout
        assert moved == recovery and moved.strip(), "the same Recovery volume"
        assert helpers.fs_size(helpers.node(target, 4), "ntfs") <= 48 * MiB, "not grown"
        assert helpers.fs_size(helpers.node(target, 3), "ntfs") > c_size + 290 * MiB
        for number, expected in files.items():
            dev = helpers.node(target, number)
            fstype = WIN11[number - 1].fstype
            check = helpers.fsck(dev, fstype)
            assert check.returncode == 0, check.stdout + check.stderr
            assert helpers.read_files(dev, fstype, tmp_path) == expected
