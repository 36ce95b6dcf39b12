"""partclone's used-block map is checked against the filesystem's own metadata (issue 14,
item 4): where partclone calls in-use blocks free, the restore must still hold them.

Real filesystems made with the real tools, backed up through the CLI with the real partclone,
restored, and compared with the original by the filesystem's own checker and by extracting
every file with a userspace tool (debugfs rdump, btrfs restore) from each image alone.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from imaging.disks import filesystems
from imaging.image.devices import device_size
from tests.conftest import PASSPHRASE
from tests.imaging.disks.conftest import weak_repository
from tests.support import MiB, fill_with_files, have, loop_device, mounted, run_cli, sh, tree_digest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not all(have(t) for t in ("partclone.extfs", "partclone.btrfs", "mkfs.btrfs", "debugfs")),
        reason="needs partclone, btrfs-progs and e2fsprogs",
    ),
]


def backup_and_restore(
    source: str, tmp: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[dict[str, object], Path]:
    """`backup --json` of ``source`` into a new repository, then `restore` into a file."""
    repo = weak_repository(tmp / "repo")
    passphrase = tmp / "passphrase"
    passphrase.write_text(PASSPHRASE)
    common = ["--repo", str(repo.path), "--passphrase-file", str(passphrase), "--progress", "none"]
    capsys.readouterr()
    assert run_cli("backup", *common, "--json", source) == 0
    summary = json.loads(capsys.readouterr().out)
    target = tmp / "restored.img"
    sh("truncate", "-s", str(device_size(source)), target)
    assert run_cli("restore", *common, "--yes", "latest", str(target)) == 0
    return summary, target


# --- ext4 -------------------------------------------------------------------------------------


def make_ext4_with_files(image: Path, tmp: Path) -> dict[str, str]:
    """256 MiB ext4 in 32 MiB groups (so files spread over several), 60 MiB of real files."""
    sh("truncate", "-s", "256M", image)
    sh("mkfs.ext4", "-q", "-F", "-b", "4096", "-g", "8192", image)
    staging = tmp / "files"
    fill_with_files(staging, 60 * MiB, seed=14)
    with loop_device(image) as dev, mounted(dev, tmp / "mnt") as root:
        sh("cp", "-a", f"{staging}/.", root)
    return tree_digest(staging)


def fullest_initialised_group(image: Path) -> int:
    """The group after group 0 holding the most file blocks (fewest free)."""
    out = sh("dumpe2fs", image).stdout
    groups = re.findall(r"^Group (\d+): .*\[([^]]*)\]\n(?:.*\n)*?\s+(\d+) free blocks", out, re.M)
    candidates = [(int(free), int(g)) for g, flags, free in groups if int(g) > 0]
    return min(candidates)[1]


def flag_block_uninit(image: Path, group: int, *, fix_counts: bool) -> None:
    """Flag ``group`` BLOCK_UNINIT though files use it (with debugfs); with ``fix_counts``
    also make the descriptor's and superblock's free counts agree with the flag, as e2fsck
    counts them, so nothing but the inodes tells that the blocks are in use."""
    script = f"set_bg {group} flags 7\nset_bg {group} checksum calc\n"
    subprocess.run(["debugfs", "-w", "-f", "-", image], input=script, text=True, check=True)
    if not fix_counts:
        return
    report = sh("e2fsck", "-f", "-n", image, check=False).stdout
    group_free = re.search(
        rf"Free blocks count wrong for group #{group} \(\d+, counted=(\d+)\)", report
    )
    total_free = re.search(r"Free blocks count wrong \(\d+, counted=(\d+)\)", report)
    assert group_free and total_free, report
    script = (
        f"set_bg {group} free_blocks_count {group_free.group(1)}\n"
        f"set_bg {group} checksum calc\n"
        f"ssv free_blocks_count {total_free.group(1)}\n"
    )
    subprocess.run(["debugfs", "-w", "-f", "-", image], input=script, text=True, check=True)


def e2fsck_report(image: Path) -> list[str]:
    result = sh("e2fsck", "-f", "-n", image, check=False)
    return [line for line in result.stdout.splitlines() if str(image) not in line]


def rdump(image: Path, out: Path) -> dict[str, str]:
    out.mkdir()
    sh("debugfs", "-R", f"rdump / {out}", image)
    return tree_digest(out)


def test_ext4_files_in_a_group_wrongly_flagged_block_uninit_are_restored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "src.img"
    files = make_ext4_with_files(image, tmp_path)
    group = fullest_initialised_group(image)
    flag_block_uninit(image, group, fix_counts=True)
    original = rdump(image, tmp_path / "original")
    assert original == files  # debugfs still finds every file in the original

    summary, restored = backup_and_restore(str(image), tmp_path, capsys)

    assert e2fsck_report(restored) == e2fsck_report(image)
    assert rdump(restored, tmp_path / "restore") == original
    warnings = summary["warnings"]
    assert isinstance(warnings, list) and len(warnings) == 1, warnings
    assert "e2fsck finds" in warnings[0] and f"groups {group} flagged BLOCK_UNINIT" in warnings[0]


def test_backup_json_carries_the_imaged_raw_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "src.img"
    files = make_ext4_with_files(image, tmp_path)
    # descriptor counts left as they were: partclone sees the disagreement and gives up
    flag_block_uninit(image, fullest_initialised_group(image), fix_counts=False)

    summary, restored = backup_and_restore(str(image), tmp_path, capsys)

    assert summary["images"][0]["method"] == "raw"  # type: ignore[index]
    warnings = summary["warnings"]
    assert isinstance(warnings, list) and len(warnings) == 1
    assert "partclone could not map the used blocks, imaged raw" in warnings[0]
    assert rdump(restored, tmp_path / "restore") == files


def test_a_normal_ext4_gets_no_extra_blocks_and_no_warning(tmp_path: Path) -> None:
    from imaging.disks import crosscheck

    image = tmp_path / "src.img"
    make_ext4_with_files(image, tmp_path)
    used = filesystems.used_map(str(image), "ext4", device_size(str(image)), MiB)
    checked, warnings = crosscheck.checked_map(str(image), "ext4", used)
    assert warnings == []
    assert checked.used_bytes == used.used_bytes


# --- btrfs ------------------------------------------------------------------------------------


def btrfs_restore(image: Path, out: Path) -> dict[str, str]:
    """Every file btrfs-progs can read from ``image`` alone (no mount, no other member)."""
    out.mkdir()
    sh("btrfs", "restore", image, out, check=False)
    return tree_digest(out)


def test_member_of_a_two_device_btrfs_restores_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "m1.img", tmp_path / "m2.img"
    for member in (first, second):
        sh("truncate", "-s", "256M", member)
    staging = tmp_path / "files"
    fill_with_files(staging, 60 * MiB, seed=41)
    files = tree_digest(staging)
    with loop_device(first) as dev1, loop_device(second) as dev2:
        sh("mkfs.btrfs", "-q", "-f", "-m", "raid1", "-d", "raid1", dev1, dev2)
        with mounted(dev1, tmp_path / "mnt") as root:
            sh("cp", "-a", f"{staging}/.", root)
        summary, restored = backup_and_restore(dev2, tmp_path, capsys)
    sh("btrfs", "device", "scan", "--forget", check=False)

    # the original member opens alone (raid1: it holds every block); so must the restore
    original = sh("btrfs", "check", "--readonly", second, check=False)
    assert original.returncode == 0, original.stderr
    check = sh("btrfs", "check", "--readonly", restored, check=False)
    assert check.returncode == 0, check.stderr
    assert btrfs_restore(second, tmp_path / "original") == files
    assert btrfs_restore(restored, tmp_path / "restore") == files
    warnings = summary["warnings"]
    assert isinstance(warnings, list) and len(warnings) == 1
    assert "member (device id 2) of a 2-device btrfs" in warnings[0]


def test_single_device_btrfs_keeps_both_copies_of_dup_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "src.img"
    sh("truncate", "-s", "512M", image)
    staging = tmp_path / "files"
    fill_with_files(staging, 40 * MiB, seed=7)
    with loop_device(image) as dev:
        sh("mkfs.btrfs", "-q", "-f", "-m", "dup", dev)
        with mounted(dev, tmp_path / "mnt") as root:
            sh("cp", "-a", f"{staging}/.", root)

    summary, restored = backup_and_restore(str(image), tmp_path, capsys)

    assert summary["warnings"] == []  # the DUP copies are certain: added without a warning
    with loop_device(restored) as dev, mounted(dev, tmp_path / "check", "ro") as root:
        # scrub reads every copy: partclone alone leaves the second copy of metadata out
        scrub = sh("btrfs", "scrub", "start", "-B", "-r", root, check=False)
        assert "no errors found" in scrub.stdout, scrub.stdout + scrub.stderr
        assert tree_digest(root) == tree_digest(staging)
