"""The preloaded backup drive: layout, the repository, confirmation, and boots."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from build.context import Context
from build.provision import DATA_LABEL, provision
from build.qemu import Drive, Machine, boot_until_ready
from imaging.errors import Cancelled, UsageError
from imaging.repository.store import Repository

# One worker provisions the module's drive (backup_drive) for all of them.
pytestmark = pytest.mark.xdist_group("provision")

DISK_BYTES = 2 * 2**30
PASSPHRASE = "correct horse battery staple"


def blank_disk(path: Path) -> Path:
    with path.open("wb") as f:
        f.truncate(DISK_BYTES)
    return path


@contextlib.contextmanager
def attached(image: Path) -> Iterator[str]:
    device = subprocess.run(
        ["losetup", "--show", "--find", "--partscan", "--read-only", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        # This kernel does not scan GPT itself: partx adds the partitions.
        subprocess.run(["partx", "--update", device], check=False, capture_output=True)
        subprocess.run(["udevadm", "settle"], check=False)
        for _ in range(50):  # the partition nodes appear a moment after losetup returns
            if Path(f"{device}p3").exists():
                break
            time.sleep(0.2)
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


@pytest.fixture(scope="module")
def backup_drive(appliance: Context, tmp_path_factory: pytest.TempPathFactory) -> Path:
    disk = blank_disk(tmp_path_factory.mktemp("provision") / "backup.img")
    provision(appliance, disk, yes=True, passphrase=lambda: PASSPHRASE)
    return disk


@pytest.mark.root
@pytest.mark.integration
@pytest.mark.qemu  # needs the built appliance (build_image)
def test_provision_asks_and_writes_nothing_without_the_disk_name(
    appliance: Context, tmp_path: Path
) -> None:
    disk = blank_disk(tmp_path / "disk.img")
    questions: list[str] = []

    def answer(question: str) -> str:
        questions.append(question)
        return "yes"

    with pytest.raises(Cancelled):
        provision(appliance, disk, ask=answer, passphrase=lambda: PASSPHRASE)
    assert len(questions) == 1 and "Type loop" in questions[0]
    with disk.open("rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)


@pytest.mark.root
@pytest.mark.integration
@pytest.mark.qemu  # needs the built appliance (build_image)
def test_provisioned_drive_layout_and_repository(backup_drive: Path, tmp_path: Path) -> None:
    table = subprocess.run(
        ["sgdisk", "--print", str(backup_drive)], capture_output=True, text=True, check=True
    ).stdout
    assert "EF02" in table and "EF00" in table and DATA_LABEL in table
    with attached(backup_drive) as device:
        fstypes = [
            subprocess.run(
                ["blkid", "-p", "-o", "value", "-s", "TYPE", f"{device}p{number}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            for number in (2, 3)
        ]
        assert fstypes == ["vfat", "ext4"]
        files = subprocess.run(
            ["mdir", "-b", "-/", "-i", f"{device}p2", "::/"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for name in (
            "EFI/BOOT/BOOTX64.EFI",
            "EFI/BOOT/grubx64.efi",
            "boot/grub/grub.cfg",
            "live/filesystem.squashfs",
            "live/vmlinuz",
            "live/initrd.img",
        ):
            assert f"::/{name}" in files, name
        mountpoint = tmp_path / "data"
        mountpoint.mkdir()
        subprocess.run(["mount", "-o", "ro", f"{device}p3", str(mountpoint)], check=True)
        try:
            repo = Repository.open(mountpoint / "hourglass", passphrase=PASSPHRASE)
            assert list(repo.snapshots()) == []
        finally:
            subprocess.run(["umount", str(mountpoint)], check=False)
    with backup_drive.open("rb") as f:
        mbr = f.read(512)
    assert mbr[510:] == b"\x55\xaa"
    grub_boot = Path("/usr/lib/grub/i386-pc/boot.img").read_bytes()
    assert mbr[0x68:0x1B8] == grub_boot[0x68:0x1B8]  # GRUB's boot code
    assert int.from_bytes(mbr[0x5C:0x64], "little") == 2048  # pointing at the BIOS boot partition


@pytest.mark.qemu
@pytest.mark.slow
def test_provisioned_drive_boots_uefi(
    backup_drive: Path, work: Path, results: dict[str, object]
) -> None:
    machine = Machine("uefi", [Drive(backup_drive, "disk", boot=True, snapshot=True)])
    result = boot_until_ready(machine, work, timeout=600, booted=True)
    results["boot_seconds.backup_drive_uefi"] = round(result.seconds)
    assert b"firmware=uefi" in result.serial


@pytest.mark.qemu
@pytest.mark.slow
def test_provisioned_drive_boots_bios(
    backup_drive: Path, work: Path, results: dict[str, object]
) -> None:
    machine = Machine("bios", [Drive(backup_drive, "disk", boot=True, snapshot=True)])
    result = boot_until_ready(machine, work, timeout=600, booted=True)
    results["boot_seconds.backup_drive_bios"] = round(result.seconds)
    assert b"firmware=bios" in result.serial


@pytest.mark.root
@pytest.mark.integration
@pytest.mark.qemu  # needs the built appliance (build_image)
def test_provision_with_exfat_and_no_encryption(appliance: Context, tmp_path: Path) -> None:
    disk = blank_disk(tmp_path / "exfat.img")
    provision(appliance, disk, filesystem="exfat", encryption="none", yes=True)
    table = subprocess.run(["sgdisk", "--print", str(disk)], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    assert "0700" in table
    with attached(disk) as device:
        kind = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", f"{device}p3"],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert kind.strip() == "exfat"
        mountpoint = tmp_path / "data"
        mountpoint.mkdir()
        subprocess.run(["mount.exfat-fuse", "-o", "ro", f"{device}p3", str(mountpoint)],
                       check=True)  # fmt: skip
        try:
            assert Repository.open(mountpoint / "hourglass").config["encryption"] == "none"
        finally:
            subprocess.run(["umount", str(mountpoint)], check=False)


@pytest.mark.root
@pytest.mark.integration
@pytest.mark.qemu  # needs the built appliance (build_image)
def test_provision_asks_for_the_passphrase_before_writing(
    appliance: Context, tmp_path: Path
) -> None:
    disk = blank_disk(tmp_path / "disk.img")

    def no_terminal() -> str:
        raise UsageError("A passphrase is needed and there is no terminal to ask on.")

    with pytest.raises(UsageError):
        provision(appliance, disk, yes=True, passphrase=no_terminal)
    with disk.open("rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)
