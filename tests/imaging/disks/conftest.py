"""Source disks and their snapshots, built once per test run: mkfs and copying files is the
slow part, and every restore test starts from the same backup."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imaging.repository import keys
from imaging.repository.store import Repository, Snapshot
from tests.conftest import PASSPHRASE, WEAK_KDF
from tests.imaging.disks import helpers
from tests.support import MiB, run_cli

FILES = {"vfat": 6, "xfs": 20, "btrfs": 16, "ntfs": 10, "exfat": 10, "ext4": 20}  # MiB
TOOLS = ("sgdisk", "partx", "partclone.extfs", "mkfs.ntfs", "mkfs.exfat", "ntfs-3g", "mcopy")


def need_tools() -> None:
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


@dataclass
class SourceDisk:
    image: Path
    device: str
    parts: list[Any]  # helpers.GptPart or helpers.MbrPartition, with their files' digests
    table: str  # util-linux's dump of the table
    head: bytes  # the first MiB: boot code, table, gap
    raw: dict[int, bytes]  # content of raw partitions


@dataclass
class Backup:
    repo: Repository
    snapshot: Snapshot
    passphrase_file: Path

    def cli(self, *argv: str) -> int:
        return run_cli(
            *argv, "--repo", str(self.repo.path), "--passphrase-file", str(self.passphrase_file)
        )


def weak_repository(path: Path) -> Repository:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keys, "PASSPHRASE_KDF", WEAK_KDF)
        return Repository.init(path, passphrase=PASSPHRASE)


def backup_of(source: str, tmp: Path, *extra: str) -> Backup:
    repo = weak_repository(tmp / "repo")
    passphrase_file = tmp / "passphrase"
    passphrase_file.write_text(PASSPHRASE)
    code = run_cli(
        "backup",
        "--repo",
        str(repo.path),
        "--passphrase-file",
        str(passphrase_file),
        source,
        *extra,
    )
    assert code == 0
    return Backup(repo, repo.snapshots()[-1], passphrase_file)


@pytest.fixture(scope="session")
def gpt_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SourceDisk]:
    need_tools()
    tmp = tmp_path_factory.mktemp("gpt-source")
    image = tmp / "gpt.img"
    helpers.make_gpt_disk(image, helpers.GPT_LAYOUT, helpers.GPT_DISK_MIB)
    with helpers.attached(image) as device:
        # something in the gap after the GPT entries, and a core.img in the BIOS boot partition
        helpers.write_bytes(device, 34 * 512, helpers.gap_content()[: MiB - 34 * 512])
        raw = {1: os.urandom(MiB)}
        helpers.write_bytes(helpers.node(device, 1), 0, raw[1])
        for p in helpers.GPT_LAYOUT:
            if p.fstype:
                dev = helpers.node(device, p.number)
                helpers.make_fs(dev, p.fstype, p.label)
                p.files = helpers.put_files(dev, p.fstype, tmp, FILES[p.fstype] * MiB, p.number)
        yield SourceDisk(
            image=image,
            device=device,
            parts=helpers.GPT_LAYOUT,
            table=helpers.table_dump(device),
            head=helpers.read_bytes(device, 0, MiB),
            raw=raw,
        )


@pytest.fixture(scope="session")
def gpt_backup(gpt_source: SourceDisk, tmp_path_factory: pytest.TempPathFactory) -> Backup:
    return backup_of(gpt_source.device, tmp_path_factory.mktemp("gpt-repo"))


@pytest.fixture(scope="session")
def mbr_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SourceDisk]:
    need_tools()
    tmp = tmp_path_factory.mktemp("mbr-source")
    image = tmp / "mbr.img"
    helpers.make_mbr_disk(image)
    with helpers.attached(image) as device:
        helpers.write_bytes(device, 512, helpers.gap_content())
        for p in helpers.MBR_LAYOUT:
            dev = helpers.node(device, p.number)
            helpers.make_fs(dev, p.fstype, p.label)
            p.files = helpers.put_files(dev, p.fstype, tmp, 8 * MiB, 100 + p.number)
        yield SourceDisk(
            image=image,
            device=device,
            parts=helpers.MBR_LAYOUT,
            table=helpers.table_dump(device),
            head=helpers.read_bytes(device, 0, MiB),
            raw={},
        )


@pytest.fixture(scope="session")
def mbr_backup(mbr_source: SourceDisk, tmp_path_factory: pytest.TempPathFactory) -> Backup:
    return backup_of(mbr_source.device, tmp_path_factory.mktemp("mbr-repo"))
