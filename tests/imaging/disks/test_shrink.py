"""Restoring a disk snapshot to a smaller disk (imaging.disks.shrink): real layouts on loop
devices, real filesystems shrunk by their own tools, checked by their own checkers.

Each restore prints its figures (sizes before and after, time, what shrank and moved); run
with ``-s`` to see them."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from imaging import jobs
from imaging.disks import shrink
from imaging.errors import Cancelled, NoSpace, TargetTooSmall
from imaging.progress import Progress
from tests.imaging.disks import helpers
from tests.imaging.disks.conftest import Backup, backup_of, need_tools
from tests.support import MiB, fill_with_files, sh

pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.slow]


def rows(device: str) -> dict[int, list[str]]:
    """partx's rows by number: NR, START, SECTORS, TYPE, UUID (PARTUUID), NAME, FLAGS."""
    lines = helpers.table_dump(device).splitlines()
    return {int(line.split()[0]): line.split() for line in lines[2:]}


def ptuuid(device: str) -> str:
    return helpers.table_dump(device).splitlines()[0]


def uuid(dev: str) -> str:
    return sh("blkid", "-p", "-o", "value", "-s", "UUID", dev).stdout.strip()


def restore_timed(
    backup: Backup, target: str, capsys: pytest.CaptureFixture[str], *extra: str
) -> str:
    """Restore the latest snapshot to ``target`` with ``--yes``; its output (and the time it
    took, printed)."""
    capsys.readouterr()
    started = time.monotonic()
    code = backup.cli("restore", "latest", target, "--yes", *extra)
    elapsed = time.monotonic() - started
    out = capsys.readouterr()
    assert code == 0, out.err
    with capsys.disabled():
        print(f"\n[shrink] restore to {target} {' '.join(extra)}: {elapsed:.1f} s")
        print("\n".join(f"[shrink]   {line}" for line in out.out.splitlines()))
    return out.out


def at_the_end(device: str, disk_mib: int, row: list[str]) -> bool:
    end = int(row[1]) + int(row[2])
    return disk_mib * MiB // 512 - end < 2048 + 34


# --- Windows 11 --------------------------------------------------------------------------

WIN11 = [replace(p, size_mib=420) if p.number == 3 else p for p in helpers.WIN11_LAYOUT]
WIN11_MIB = 1 + sum(p.size_mib for p in WIN11) + 2  # 551


def test_windows_11_layout_to_a_half_size_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """C: (NTFS, mostly empty) shrinks with ntfsresize to give up half the disk; Recovery
    moves to the new end intact (same volume, size, files); ESP and MSR stay; the disk and
    partition GUIDs are kept; every filesystem checks clean and holds the same files."""
    need_tools()
    image = tmp_path / "win11.img"
    helpers.make_gpt_disk(image, WIN11, WIN11_MIB)
    with helpers.attached(image) as device:
        files = helpers.make_filesystems(device, WIN11, tmp_path, 8 * MiB)
        before = rows(device)
        disk_guid = ptuuid(device)
        uuids = {n: uuid(helpers.node(device, n)) for n in files}
        recovery_size = helpers.fs_size(helpers.node(device, 4), "ntfs")
        c_size = helpers.fs_size(helpers.node(device, 3), "ntfs")
        backup = backup_of(device, tmp_path)
    half = WIN11_MIB // 2
    target_image = tmp_path / "half.img"
    helpers.garbage_file(target_image, half * MiB)
    with helpers.attached(target_image) as target:
        out = restore_timed(backup, target, capsys)
        assert "Partition 3 shrinks from" in out and "ntfsresize" in out, out
        assert "Partition 4 (Windows recovery" in out and "moves to the end" in out, out
        assert "Shrunk: partition 3: ntfs shrunk from" in out, out
        verify = sh("sgdisk", "--verify", target).stdout
        assert "No problems found" in verify, verify
        after = rows(target)
        assert ptuuid(target) == disk_guid
        assert after[1] == before[1] and after[2] == before[2], "ESP and MSR as they were"
        assert after[3][1] == before[3][1] and int(after[3][2]) < int(before[3][2]) // 2
        assert after[3][3:] == before[3][3:], "C: keeps its type, PARTUUID and name"
        assert after[4][2:] == before[4][2:], "Recovery: same size, type, PARTUUID, name"
        assert int(after[4][1]) == int(after[3][1]) + int(after[3][2])
        assert at_the_end(target, half, after[4])
        c = helpers.node(target, 3)
        assert helpers.fs_size(c, "ntfs") <= int(after[3][2]) * 512 < c_size
        assert helpers.fs_size(helpers.node(target, 4), "ntfs") == recovery_size
        check = sh("ntfsresize", "--check", "--force", "--no-progress-bar", c, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        for number, expected in files.items():
            dev = helpers.node(target, number)
            fstype = WIN11[number - 1].fstype
            fsck = helpers.fsck(dev, fstype)
            assert fsck.returncode == 0, fsck.stdout + fsck.stderr
            assert uuid(dev) == uuids[number]
            assert helpers.read_files(dev, fstype, tmp_path) == expected
        with capsys.disabled():
            print(
                f"[shrink]   disk {WIN11_MIB} MiB -> {half} MiB; C: {c_size // MiB} MiB -> "
                f"{helpers.fs_size(c, 'ntfs') // MiB} MiB"
            )


# --- Dual boot: Windows and Linux on one disk --------------------------------------------

DUAL = [
    helpers.GptPart(1, "vfat", 64, "ef00", "SYSTEM", "EFI system partition"),
    helpers.GptPart(2, "", 16, "0c01", name="Microsoft reserved partition"),
    helpers.GptPart(3, "ntfs", 320, "0700", "Windows", "Basic data partition"),
    helpers.GptPart(4, "ntfs", 48, "2700", "Recovery", "Windows RE"),
    helpers.GptPart(5, "ext4", 128, "8304", "root", "Linux root"),
    helpers.GptPart(6, "", 32, "8200", name="Linux swap"),
    helpers.GptPart(7, "ext4", 96, "8302", "home", "Linux home"),
]
DUAL_MIB = 1 + sum(p.size_mib for p in DUAL) + 2  # 707


def test_dual_boot_to_a_smaller_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Windows (ESP, MSR, C:, Recovery) and Linux (root, swap, /home) on one disk, onto a
    disk 200 MiB smaller: C:, the largest, shrinks with ntfsresize; Recovery, the Linux root,
    swap and /home move back unchanged, in order, /home at the new end; ESP and MSR stay;
    every GUID and filesystem UUID is kept; every filesystem checks clean with its files."""
    need_tools()
    image = tmp_path / "dual.img"
    helpers.make_gpt_disk(image, DUAL, DUAL_MIB)
    with helpers.attached(image) as device:
        files = helpers.make_filesystems(device, DUAL, tmp_path, 6 * MiB)
        sh("mkswap", "-L", "swap", helpers.node(device, 6))
        before = rows(device)
        disk_guid = ptuuid(device)
        uuids = {n: uuid(helpers.node(device, n)) for n in (*files, 6)}
        c_size = helpers.fs_size(helpers.node(device, 3), "ntfs")
        backup = backup_of(device, tmp_path)
    disk_mib = DUAL_MIB - 200
    target_image = tmp_path / "smaller.img"
    helpers.garbage_file(target_image, disk_mib * MiB)
    with helpers.attached(target_image) as target:
        out = restore_timed(backup, target, capsys)
        assert "Partition 3 shrinks from" in out and "ntfsresize" in out, out
        assert "Shrunk: partition 3: ntfs shrunk from" in out, out
        assert "No problems found" in sh("sgdisk", "--verify", target).stdout
        after = rows(target)
        assert ptuuid(target) == disk_guid
        assert after[1] == before[1] and after[2] == before[2], "ESP and MSR as they were"
        assert after[3][1] == before[3][1] and int(after[3][2]) < int(before[3][2])
        assert after[3][3:] == before[3][3:], "C: keeps its type, PARTUUID and name"
        delta = int(before[4][1]) - int(after[4][1])
        assert delta >= 199 * 2048, "the partitions after C: moved back by what it gave up"
        for n in (4, 5, 6, 7):
            assert after[n][2:] == before[n][2:], f"p{n}: same size, type, PARTUUID, name"
            assert int(after[n][1]) == int(before[n][1]) - delta
        assert at_the_end(target, disk_mib, after[7])
        c = helpers.node(target, 3)
        assert helpers.fs_size(c, "ntfs") <= int(after[3][2]) * 512 < c_size
        check = sh("ntfsresize", "--check", "--force", "--no-progress-bar", c, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        assert uuid(helpers.node(target, 6)) == uuids[6], "swap keeps its UUID"
        for number, expected in files.items():
            dev = helpers.node(target, number)
            fstype = DUAL[number - 1].fstype
            fsck = helpers.fsck(dev, fstype)
            assert fsck.returncode == 0, fsck.stdout + fsck.stderr
            assert uuid(dev) == uuids[number]
            assert helpers.read_files(dev, fstype, tmp_path) == expected
        with capsys.disabled():
            print(
                f"[shrink]   dual boot: disk {DUAL_MIB} MiB -> {disk_mib} MiB; C: "
                f"{c_size // MiB} MiB -> {helpers.fs_size(c, 'ntfs') // MiB} MiB; "
                f"4-7 moved back {delta // 2048} MiB"
            )


# --- Linux: BIOS boot, ext4 root, swap, xfs /home -----------------------------------------

LINUX = [
    helpers.GptPart(1, "", 1, "ef02", name="BIOS boot"),
    helpers.GptPart(2, "ext4", 256, "8304", "root", "root"),
    helpers.GptPart(3, "", 32, "8200", name="swap"),
    helpers.GptPart(4, "xfs", 600, "8302", "home", "home"),
]
LINUX_MIB = 1 + sum(p.size_mib for p in LINUX) + 2  # 892


@dataclass
class LinuxSource:
    device: str
    backup: Backup
    rows: dict[int, list[str]]
    disk_guid: str
    head: bytes
    core: bytes  # the BIOS boot partition's content (GRUB's core.img)
    root_files: dict[str, str]
    home: dict[str, tuple[object, ...]]  # helpers.tree_metadata of /home
    uuids: dict[int, str]


def fill_home(root: Path, tmp: Path) -> None:
    """Files whose metadata a copy could lose: owners, modes, times, xattrs, ACLs, hard
    links, a sparse file, a symlink."""
    fill_with_files(root, 8 * MiB, seed=44)
    ann = root / "ann"
    ann.mkdir()
    letter = ann / "letter.txt"
    letter.write_text("Dear Bob\n")
    os.chown(ann, 1001, 1001)
    os.chown(letter, 1001, 100)
    os.chmod(letter, 0o640)
    os.setxattr(letter, "user.tag", b"important")
    sh("setfacl", "-m", "u:1234:rw", letter)
    sh("setfacl", "-d", "-m", "g:2345:rx", ann)
    os.link(letter, ann / "letter-link.txt")
    with open(ann / "sparse.bin", "wb") as f:
        f.seek(20 * MiB)
        f.write(b"end")
    os.symlink("letter.txt", ann / "latest")
    os.utime(letter, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    os.utime(ann / "sparse.bin", ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))


@pytest.fixture(scope="module")
def linux(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LinuxSource]:
    need_tools()
    tmp = tmp_path_factory.mktemp("linux-source")
    image = tmp / "linux.img"
    helpers.make_gpt_disk(image, LINUX, LINUX_MIB)
    with helpers.attached(image) as device:
        helpers.write_bytes(device, 34 * 512, helpers.gap_content()[: MiB - 34 * 512])
        core = os.urandom(MiB)
        helpers.write_bytes(helpers.node(device, 1), 0, core)
        helpers.make_fs(helpers.node(device, 2), "ext4", "root")
        root_files = helpers.put_files(helpers.node(device, 2), "ext4", tmp, 8 * MiB, 42)
        sh("mkswap", "-L", "swap", helpers.node(device, 3))
        home_dev = helpers.node(device, 4)
        helpers.make_fs(home_dev, "xfs", "home")
        with helpers.mounted_fs(home_dev, "xfs", tmp / "home") as root:
            fill_home(root, tmp)
            home = helpers.tree_metadata(root)
        yield LinuxSource(
            device=device,
            backup=backup_of(device, tmp),
            rows=rows(device),
            disk_guid=ptuuid(device),
            head=helpers.read_bytes(device, 0, MiB),
            core=core,
            root_files=root_files,
            home=home,
            uuids={n: uuid(helpers.node(device, n)) for n in (2, 3, 4)},
        )


def check_linux(source: LinuxSource, target: str, disk_mib: int, tmp: Path) -> None:
    """Boot survives (the gap, the BIOS boot partition where it was, the GUIDs), the table
    checks clean, ext4 and xfs check clean with the same files, ids and metadata."""
    assert "No problems found" in sh("sgdisk", "--verify", target).stdout
    after = rows(target)
    assert ptuuid(target) == source.disk_guid
    assert after[1] == source.rows[1], "the BIOS boot partition never moves"
    assert helpers.read_bytes(helpers.node(target, 1), 0, MiB) == source.core
    head = helpers.read_bytes(target, 0, MiB)
    assert head[:440] == source.head[:440] and head[34 * 512 :] == source.head[34 * 512 :]
    for n in (2, 3, 4):
        assert after[n][3:] == source.rows[n][3:], f"p{n}: same type, PARTUUID, name"
        assert uuid(helpers.node(target, n)) == source.uuids[n]
    assert at_the_end(target, disk_mib, after[4])
    root = helpers.node(target, 2)
    check = sh("e2fsck", "-f", "-n", root, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert helpers.fs_size(root, "ext4") <= int(after[2][2]) * 512
    assert helpers.read_files(root, "ext4", tmp) == source.root_files
    home = helpers.node(target, 4)
    check = sh("xfs_repair", "-n", home, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert sh("blkid", "-p", "-o", "value", "-s", "LABEL", home).stdout.strip() == "home"
    with helpers.mounted_fs(home, "xfs", tmp / "home-after", read_only=True) as mounted:
        assert helpers.tree_metadata(mounted) == source.home


def test_linux_layout_to_a_smaller_disk_recreates_xfs_home(
    linux: LinuxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plan's choice, the largest filesystem, is xfs /home, the last partition: it is
    made anew at the smaller size with the same UUID and label, and its files (owners,
    modes, times, xattrs, ACLs, hard links, a sparse file) come from the snapshot."""
    disk_mib = LINUX_MIB - 250
    image = tmp_path / "smaller.img"
    helpers.garbage_file(image, disk_mib * MiB)
    with helpers.attached(image) as target:
        out = restore_timed(linux.backup, target, capsys)
        assert "Partition 4 shrinks from" in out and "made anew" in out, out
        assert "Shrunk: partition 4: xfs re-created from" in out, out
        after = rows(target)
        assert all(after[n] == linux.rows[n] for n in (1, 2, 3)), "nothing before it moves"
        assert int(after[4][2]) < int(linux.rows[4][2])
        check_linux(linux, target, disk_mib, tmp_path)
        size = helpers.fs_size(helpers.node(target, 4), "xfs")
        with capsys.disabled():
            print(
                f"[shrink]   disk {LINUX_MIB} MiB -> {disk_mib} MiB; /home 600 -> {size // MiB} MiB"
            )


def test_linux_layout_shrinks_ext4_root_and_moves_swap_and_home(
    linux: LinuxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--resize-partition 2: the ext4 root shrinks with resize2fs (e2fsck -f clean after),
    swap and the xfs /home move back unchanged."""
    disk_mib = LINUX_MIB - 150
    image = tmp_path / "smaller-root.img"
    helpers.garbage_file(image, disk_mib * MiB)
    with helpers.attached(image) as target:
        out = restore_timed(linux.backup, target, capsys, "--resize-partition", "2")
        assert "Partition 2 shrinks from" in out and "resize2fs" in out, out
        assert "Partition 3 (" in out and "Partition 4 (" in out, out
        assert "Shrunk: partition 2: ext4 shrunk from" in out, out
        after = rows(target)
        assert after[2][1] == linux.rows[2][1] and int(after[2][2]) < int(linux.rows[2][2])
        delta = int(linux.rows[3][1]) - int(after[3][1])
        assert delta >= 149 * 2048
        for n in (3, 4):
            assert int(after[n][1]) == int(linux.rows[n][1]) - delta
            assert after[n][2:] == linux.rows[n][2:]
        assert helpers.fs_size(helpers.node(target, 4), "xfs") == helpers.fs_size(
            helpers.node(linux.device, 4), "xfs"
        ), "/home moved, not resized"
        check_linux(linux, target, disk_mib, tmp_path)
        size = helpers.fs_size(helpers.node(target, 2), "ext4")
        with capsys.disabled():
            print(f"[shrink]   disk {LINUX_MIB} MiB -> {disk_mib} MiB; / 256 -> {size // MiB} MiB")


def test_too_small_for_the_data_is_refused_before_the_target_is_touched(
    linux: LinuxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """xfs /home cannot go under 300 MiB: a disk that leaves it less is refused, naming the
    disk size the data needs, and the target's first MiB is as it was."""
    image = tmp_path / "too-small.img"
    helpers.garbage_file(image, (LINUX_MIB - 320) * MiB)
    before = helpers.read_bytes(str(image), 0, MiB)
    with helpers.attached(image) as target:
        capsys.readouterr()
        code = linux.backup.cli("restore", "latest", target, "--yes")
        err = capsys.readouterr().err
        assert code == 6, err
        assert "smaller than the snapshot's data needs" in err and "Partition 4 (xfs)" in err
        needed = int(err.split("needs (")[1].split(", ")[1].split()[0])
        assert needed > (LINUX_MIB - 320) * MiB
        assert helpers.read_bytes(target, 0, MiB) == before


def test_the_filesystem_tool_refuses_in_scratch_and_a_full_scratch_is_refused(
    linux: LinuxSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Below what resize2fs says the root needs, the scratch copy refuses (the target is
    not written by then) and is removed; a scratch directory without room for the data is
    refused before anything is written."""
    backup = linux.backup
    with pytest.raises(TargetTooSmall, match="its data needs at least") as refused:
        shrink.shrink_in_scratch(
            backup.repo, backup.snapshot, "p2", 8 * MiB, scratch=str(tmp_path), target="t"
        )
    assert "resize2fs" in refused.value.message
    assert list(tmp_path.glob("hourglass-shrink-*")) == [], "the scratch copy is removed"
    scratch = tmp_path / "tiny"
    scratch.mkdir()
    image = tmp_path / "small-root.img"
    helpers.garbage_file(image, (LINUX_MIB - 150) * MiB)
    before = helpers.read_bytes(str(image), 0, MiB)
    sh("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", scratch)
    try:
        with helpers.attached(image) as target:
            capsys.readouterr()
            argv = ("restore", "latest", target, "--yes", "--resize-partition", "2")
            code = backup.cli(*argv, "--scratch", str(scratch))
            err = capsys.readouterr().err
            assert code == NoSpace.exit_code, err
            assert "scratch copy" in err and str(scratch) in err
            assert helpers.read_bytes(target, 0, MiB) == before
    finally:
        sh("umount", scratch)


def test_a_partition_whose_size_is_no_multiple_of_the_block_size(
    linux: LinuxSource, tmp_path: Path
) -> None:
    """A root that ends at the disk's end (before the backup GPT) is no multiple of 4 KiB.
    resize2fs truncates the scratch file to whole blocks; the used map counts the partition's
    last few sectors past them: the copy of those read past the end of the scratch file, and
    its loop never ended (seen as a restore stopping at 99 % in the end-to-end test)."""
    new_size = 200 * MiB + 7 * 512
    backup = linux.backup
    shrunk = shrink.shrink_in_scratch(
        backup.repo, backup.snapshot, "p2", new_size, scratch=str(tmp_path), target="t"
    )
    try:
        end = max(start + length for start, length in shrunk.ranges)
        assert end == new_size, "the partition's tail is copied"
        assert os.path.getsize(shrunk.path) >= end, "every range can be read"
        image = tmp_path / "odd.img"
        helpers.garbage_file(image, new_size)
        written = shrink.write_shrunk(shrunk, str(image), 0)
        assert written == sum(length for _, length in shrunk.ranges)
        check = sh("e2fsck", "-f", "-n", image, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        fs_end = helpers.fs_size(str(image), "ext4")
        assert fs_end < new_size
        tail = helpers.read_bytes(str(image), fs_end, new_size - fs_end)
        assert b"OLD-DATA" not in tail, "past the filesystem: written, not the disk's old data"
    finally:
        shrunk.remove()


def test_without_scratch_the_copy_goes_beside_the_repository_when_temp_is_small(
    linux: LinuxSource,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the appliance the temporary directory is in RAM: with no --scratch a shrink uses
    the repository's drive when the temporary directory has no room, and leaves nothing
    there."""
    tiny = tmp_path / "tiny-tmp"
    tiny.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", tiny)
    monkeypatch.setattr(tempfile, "tempdir", str(tiny))
    beside = Path(str(linux.backup.repo.store.local_path)).parent
    try:
        image = tmp_path / "small-root-beside.img"
        helpers.garbage_file(image, (LINUX_MIB - 150) * MiB)
        with helpers.attached(image) as target:
            out = restore_timed(linux.backup, target, capsys, "--resize-partition", "2")
            assert "Shrunk: partition 2: ext4 shrunk from" in out, out
        assert not list(beside.glob("hourglass-shrink-*"))
        assert not list(beside.glob(".hourglass-hole-*"))
        assert shrink.keeps_holes(str(beside)) and shrink.choose_scratch(
            (str(tiny), str(beside)), 8 * MiB
        ) == str(beside), "the full candidate is passed over"
    finally:
        sh("umount", tiny)


BTRFS = [
    helpers.GptPart(1, "btrfs", 400, "8300", "data", "data"),
    helpers.GptPart(2, "ext4", 48, "8300", "after", "after"),
]
BTRFS_MIB = 1 + 400 + 48 + 2


def test_btrfs_shrinks_mounted_in_scratch_and_the_partition_after_it_moves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """btrfs shrinks with `btrfs filesystem resize`, mounted from the scratch copy while
    the original (same fsid) is still attached; the ext4 after it moves back; both check
    clean with their files."""
    need_tools()
    image = tmp_path / "btrfs.img"
    helpers.make_gpt_disk(image, BTRFS, BTRFS_MIB)
    with helpers.attached(image) as device:
        files = helpers.make_filesystems(device, BTRFS, tmp_path, 8 * MiB, seed=60)
        before = rows(device)
        backup = backup_of(device, tmp_path)
        disk_mib = BTRFS_MIB - 100
        target_image = tmp_path / "smaller-btrfs.img"
        helpers.garbage_file(target_image, disk_mib * MiB)
        with helpers.attached(target_image) as target:
            out = restore_timed(backup, target, capsys)
            assert "Shrunk: partition 1: btrfs shrunk from" in out, out
            after = rows(target)
            assert int(after[1][2]) <= int(before[1][2]) - 99 * 2048
            assert after[2][2:] == before[2][2:] and at_the_end(target, disk_mib, after[2])
            assert "No problems found" in sh("sgdisk", "--verify", target).stdout
            dev = helpers.node(target, 1)
            assert helpers.fs_size(dev, "btrfs") <= int(after[1][2]) * 512
            for p in BTRFS:
                dev = helpers.node(target, p.number)
                check = helpers.fsck(dev, p.fstype)
                assert check.returncode == 0, check.stdout + check.stderr
                assert helpers.read_files(dev, p.fstype, tmp_path) == files[p.number]
        original = helpers.fs_size(helpers.node(device, 1), "btrfs")
        assert original == 400 * MiB, "the scratch copy was resized, not the original"


def test_the_confirmation_shows_the_shrink_plan_and_a_no_writes_nothing(
    linux: LinuxSource, tmp_path: Path
) -> None:
    """The question the CLI asks (RestorePreview, which the app shows too) holds the plan,
    before and after; declining leaves the target as it was."""
    image = tmp_path / "asked.img"
    helpers.garbage_file(image, (LINUX_MIB - 250) * MiB)
    before = helpers.read_bytes(str(image), 0, MiB)
    asked: list[str] = []

    def decline(preview: jobs.RestorePreview) -> None:
        asked.append(preview.question())
        raise Cancelled("no")

    with helpers.attached(image) as target:
        request = jobs.RestoreRequest(snapshot="latest", target=target)
        with pytest.raises(Cancelled):
            jobs.restore(linux.backup.repo, request, confirm=decline)
        assert helpers.read_bytes(target, 0, MiB) == before
    assert (
        "Partition 4 shrinks from 629.1 MB to 368.1 MB: its xfs filesystem is made anew"
        in (asked[0])
    ), asked


def test_the_shrunk_copy_reports_its_progress(linux: LinuxSource, tmp_path: Path) -> None:
    """After the scratch copy (the whole partition image, restored and read back), the
    copy of the shrunk filesystem into the new partition reports as a restore and a verify
    of that partition too: without it a large C: or root showed nothing for minutes."""
    image = tmp_path / "watched.img"
    helpers.garbage_file(image, (LINUX_MIB - 150) * MiB)
    events: list[Progress] = []
    with helpers.attached(image) as target:
        request = jobs.RestoreRequest(snapshot="latest", target=target, grow_partition=2)
        jobs.restore(linux.backup.repo, request, confirm=jobs.no_confirm, progress=events.append)
    runs = [(e.phase, e.total) for e in events if e.item == "p2" and e.finished]
    size = int(linux.rows[2][2]) * 512
    scratch = [total for phase, total in runs if total == size]
    copied = [(phase, total) for phase, total in runs if total < size]
    assert scratch, runs
    assert [phase for phase, _ in copied] == ["restore", "verify"], runs
    assert copied[0][1] == copied[1][1] > 0


def test_a_scratch_copy_in_ram_counts_the_memory_the_machine_has(tmp_path: Path) -> None:
    """A tmpfs says it has what its size allows, whatever holds the memory: a scratch copy
    there may take what the machine has to spare (MemAvailable, less what the restore
    needs), and a read-only directory is named as such."""
    ram = tmp_path / "ram"
    ram.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=200G", "tmpfs", str(ram))
    try:
        assert os.statvfs(ram).f_bavail * os.statvfs(ram).f_frsize > 100 * 2**30
        spare = shrink._memory_available() - shrink.RAM_KEPT
        assert shrink.choose_scratch(str(ram), spare - 64 * MiB) == str(ram)
        with pytest.raises(NoSpace, match="free in RAM"):
            shrink.choose_scratch(str(ram), spare + 64 * MiB)
        disk = tmp_path / "disk"
        disk.mkdir()
        if os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > spare + 64 * MiB:
            assert shrink.choose_scratch((str(ram), str(disk)), spare + 64 * MiB) == str(disk)
        sh("mount", "-o", "remount,ro", str(ram))
        with pytest.raises(NoSpace, match="is read-only"):
            shrink.choose_scratch(str(ram), MiB)
    finally:
        sh("umount", str(ram))
