"""Partition tables, domain logs and plans on image files: no root, no loop devices."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from imaging.disks import filesystems
from imaging.disks.model import Disk
from imaging.disks.plan import source_id
from imaging.disks.resize import plan_grow
from imaging.disks.restore import _pieces, restore_disk
from imaging.disks.table import PartitionTable, read_table, write_table
from imaging.disks.watch import DiskWatcher
from imaging.image import plan as plans
from imaging.image.usedmap import FULL, PARTIAL, UNUSED
from imaging.repository.store import Repository
from tests.imaging.disks import helpers
from tests.support import MiB, sh

needs_sgdisk = pytest.mark.skipif(shutil.which("sgdisk") is None, reason="needs sgdisk (gdisk)")


@pytest.fixture
def gpt_image(tmp_path: Path) -> Path:
    image = tmp_path / "gpt.img"
    helpers.make_gpt_disk(image, helpers.GPT_LAYOUT, helpers.GPT_DISK_MIB)
    return image


def sgdisk_info(image: Path, number: int) -> dict[str, str]:
    out = sh("sgdisk", f"--info={number}", image).stdout
    return {
        k.strip(): v.strip()
        for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)
    }


@needs_sgdisk
def test_gpt_is_read_with_ids_types_names_and_attributes(gpt_image: Path) -> None:
    table = read_table(str(gpt_image))
    assert table is not None
    assert (table.kind, table.sector_size) == ("gpt", 512)
    disk_guid = next(
        line.split(":", 1)[1].strip()
        for line in sh("sgdisk", "--print", gpt_image).stdout.splitlines()
        if line.startswith("Disk identifier")
    )
    assert table.disk_id == disk_guid.lower()
    assert [p.number for p in table.partitions] == [1, 2, 3, 4, 5, 6, 8]
    for made in helpers.GPT_LAYOUT:
        entry = table.partition(made.number)
        info = sgdisk_info(gpt_image, made.number)
        assert entry.guid == info["Partition unique GUID"].lower()
        assert entry.type == info["Partition GUID code"].split()[0].lower()
        assert entry.name == made.name
        assert entry.attributes == made.attributes
        assert entry.start == int(info["First sector"].split()[0])
        assert entry.end == int(info["Last sector"].split()[0])
    assert table.partition(1).type_name == "BIOS boot"
    assert table.head_size() == MiB
    assert PartitionTable.from_dict(table.to_dict()) == table


@needs_sgdisk
def test_gpt_is_recreated_byte_for_byte(gpt_image: Path, tmp_path: Path) -> None:
    table = read_table(str(gpt_image))
    assert table is not None
    copy = tmp_path / "copy.img"
    helpers.garbage_file(copy, helpers.GPT_DISK_MIB * MiB)
    write_table(str(copy), table)
    assert read_table(str(copy)) == table
    assert helpers.table_dump(str(copy)) == helpers.table_dump(str(gpt_image))
    # header and entries, primary and backup, are identical on a disk of the same size
    assert helpers.read_bytes(str(copy), 512, 33 * 512) == helpers.read_bytes(
        str(gpt_image), 512, 33 * 512
    )
    end = helpers.GPT_DISK_MIB * MiB
    assert helpers.read_bytes(str(copy), end - 33 * 512, 33 * 512) == helpers.read_bytes(
        str(gpt_image), end - 33 * 512, 33 * 512
    )


@needs_sgdisk
def test_new_ids_and_grow(gpt_image: Path, tmp_path: Path) -> None:
    table = read_table(str(gpt_image))
    assert table is not None
    fresh = table.with_new_ids()
    assert fresh.disk_id != table.disk_id
    assert all(a.guid != b.guid for a, b in zip(table.partitions, fresh.partitions, strict=True))
    assert [(p.number, p.start, p.end, p.type) for p in fresh.partitions] == [
        (p.number, p.start, p.end, p.type) for p in table.partitions
    ]
    bigger = (helpers.GPT_DISK_MIB + 100) * MiB
    plan = plan_grow(table, {}, bigger)  # no filesystem known: the last partition grows
    grown, last = plan.after, plan.grown
    assert last is not None and last.number == 8 and not plan.moved
    assert (last.end + 1) % 2048 == 0
    assert (last.end + 1) * 512 + table.backup_area() <= bigger
    assert bigger - (last.end + 1) * 512 < MiB + table.backup_area()
    target = tmp_path / "bigger.img"
    sh("truncate", "-s", str(bigger), target)
    write_table(str(target), grown)
    assert "No problems found" in sh("sgdisk", "--verify", target).stdout
    assert plan_grow(table, {}, table.required_size()).grown is None, "no room: nothing grows"


def test_mbr_with_extended_and_logical_partitions(tmp_path: Path) -> None:
    source = tmp_path / "mbr.img"
    helpers.make_mbr_disk(source)
    table = read_table(str(source))
    assert table is not None
    assert (table.kind, table.disk_id) == ("msdos", f"{helpers.MBR_SIGNATURE:#010x}")
    assert [(p.number, p.role, p.type, p.boot) for p in table.partitions] == [
        (1, "primary", "0x0c", True),
        (2, "primary", "0x83", False),
        (4, "extended", "0x05", False),
        (5, "logical", "0x83", False),
        (6, "logical", "0x83", False),
    ]
    copy = tmp_path / "copy.img"
    sh("truncate", "-s", f"{helpers.MBR_DISK_MIB}M", copy)
    write_table(str(copy), table)
    assert read_table(str(copy)) == table
    assert helpers.table_dump(str(copy)) == helpers.table_dump(str(source))
    plan = plan_grow(table, {}, (helpers.MBR_DISK_MIB + 50) * MiB)  # no fs: the last grows
    grown, last = plan.after, plan.grown
    assert last is not None and last.number == 6
    gap = table.partition(4).end - table.partition(6).end
    assert grown.partition(4).end == last.end + gap, "the extended partition grows with it"
    sh("truncate", "-s", f"{helpers.MBR_DISK_MIB + 50}M", copy)
    write_table(str(copy), grown)
    assert read_table(str(copy)) == grown


def test_no_table_is_none(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    sh("truncate", "-s", "8M", blank)
    assert read_table(str(blank)) is None


def test_domain_log_becomes_used_ranges_with_the_tail_kept() -> None:
    log = """# Domain logfile created by unset_name v0.3.23
# current_pos  current_status
0x03FFF000     ?
#      pos        size  status
0x00000000  0x00003000  +
0x00003000  0x00001000  ?
0x00004000  0x00400000  +
0x00404000  0x03BFB000  ?
""".splitlines()
    size = 64 * MiB
    ranges = list(filesystems.used_ranges(log, size))
    assert ranges == [(0, 0x3000), (0x4000, 0x400000), (0x03FFF000, size - 0x03FFF000)]
    from imaging.image.usedmap import UsedMap

    used = UsedMap.from_ranges(size, 4 * MiB, ranges)
    assert used.state(0) == PARTIAL and used.state(1) == PARTIAL
    assert used.state(2) == UNUSED and used.state(15) == PARTIAL
    assert used.gaps(0) == [(0x3000, 0x1000)]
    assert FULL not in (used.state(i) for i in range(2, 15))


def test_pieces_outside_the_table() -> None:
    assert _pieces(2048, [(440, 512 - 440)]) == [(0, 440), (512, 1536)]
    assert _pieces(MiB, [(440, 17408 - 440)]) == [(0, 440), (17408, MiB - 17408)]
    assert _pieces(100, [(0, 100)]) == []


def test_source_id_prefers_model_and_serial() -> None:
    disk = Disk(
        "/dev/sda",
        "/dev/disk/by-id/ata-X",
        "Samsung SSD 860",
        "S3Z9",
        1,
        512,
        512,
        "sata",
        False,
        False,
        "gpt",
    )
    assert source_id(disk) == "disk:Samsung_SSD_860:S3Z9"
    no_serial = Disk(
        "/dev/sdb", "/dev/disk/by-id/usb-Y", "Stick", "", 1, 512, 512, "usb", True, False, "msdos"
    )
    assert source_id(no_serial) == "disk:/dev/disk/by-id/usb-Y"


def test_watcher_turns_media_changes_into_add_and_remove() -> None:
    seen: list[tuple[str, str]] = []
    watcher = DiskWatcher(lambda action, device: seen.append((action, device)))
    gone = f"nonexistent{uuid.uuid4().hex[:6]}"  # sysfs says size 0 for it
    watcher._present = {f"/dev/{gone}"}
    watcher._handle("change", gone, "disk", f"/dev/{gone}")  # medium gone
    watcher._handle("change", gone, "disk", f"/dev/{gone}")  # repeated: nothing new
    watcher._handle("add", gone, "disk", f"/dev/{gone}")  # an empty node: not a disk yet
    watcher._handle("add", f"{gone}p1", "partition", f"/dev/{gone}p1")
    watcher._handle("remove", f"{gone}p1", "partition", f"/dev/{gone}p1")
    watcher._handle("add", "zram0", "disk", "/dev/zram0")  # never a disk to show
    watcher._handle("add", "sda", "scsi_device", None)
    assert seen == [
        ("remove", f"/dev/{gone}"),
        ("add", f"/dev/{gone}p1"),
        ("remove", f"/dev/{gone}p1"),
    ]


@needs_sgdisk
def test_image_file_disk_backs_up_and_restores_to_a_file(tmp_path: Path) -> None:
    """A whole-disk image file works like a disk: backed up through the file at offsets,
    restored to another file with its table."""
    image = tmp_path / "disk.img"
    sh("truncate", "-s", "40M", image)
    sh("sgdisk", "--new=1:0:+16M", "--typecode=1:8300", "--new=2:0:0", image)
    helpers.write_bytes(str(image), 0, helpers.boot_code())
    table = read_table(str(image))
    assert table is not None
    start = table.partition(1).start * 512
    sh("mkfs.ext4", "-q", "-F", "-L", "INFILE", "-E", f"offset={start}", image, "16M")
    helpers.write_bytes(str(image), table.partition(2).start * 512, b"raw data" * 1000)
    plan = plans.plan_for([str(image)])
    assert plan.kind == "disk" and plan.source_id == f"file:{image}"
    assert [i.name for i in plan.images] == ["head", "p1", "p2"]
    assert plan.images[1].meta["fstype"] == "ext4"
    repo = Repository.init(tmp_path / "repo", encryption="none")
    from imaging.image.backup import run_backup

    snapshot = run_backup(repo, plan)
    out = tmp_path / "restored.img"
    result = restore_disk(repo, snapshot, str(out))
    assert result.verified
    assert out.stat().st_size == image.stat().st_size
    assert read_table(str(out)) == table
    assert helpers.read_bytes(str(out), 0, 440) == helpers.boot_code()
    p2 = table.partition(2)
    assert helpers.read_bytes(str(out), p2.start * 512, p2.sectors * 512) == helpers.read_bytes(
        str(image), p2.start * 512, p2.sectors * 512
    )
    info = filesystems.probe(str(out), start, 16 * MiB)
    assert (info.fstype, info.label) == ("ext4", "INFILE")
    alone = tmp_path / "p1.img"
    alone.write_bytes(helpers.read_bytes(str(out), start, 16 * MiB))
    assert sh("e2fsck", "-f", "-n", alone, check=False).returncode == 0
