"""End-to-end bare-metal recovery through the appliance, unattended, in QEMU.

A real Debian 12 system disk (BIOS and UEFI bootable) is backed up twice by the appliance
booted from its ISO with hourglass.* kernel parameters; its first point in time is restored
onto a larger disk, grown, and booted with UEFI; and onto a smaller disk with new ids (by
the CLI on the host), booted with BIOS and with UEFI. Every appliance run must end with exactly one
``HOURGLASS-RESULT: OK`` line on the serial console. The restore onto the wiped disk itself,
booted with BIOS, is tests/e2e/test_as_of_a_second.py's; unattended files-restore runs on
loop devices in tests/imaging/unattended/test_run.py. Phase times go to
build/work/test-results.json (``e2e_seconds.*``)."""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

import pytest

from build.context import Context
from build.qemu import Drive, Machine, run_until_exit
from tests.e2e.hostdisk import (
    blkid,
    fsck_clean,
    make_host_disk,
    partition_mounted,
    read_files,
    root_filesystem_size,
)
from tests.e2e.lab import (
    PASSPHRASE_FILE,
    REPO,
    appliance_machine,
    hourglass,
    make_backup_drive,
    repo_snapshots,
    result_lines,
)
from tests.imaging.disks.helpers import attached

pytestmark = [pytest.mark.e2e, pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]

HOST_MIB = 2048
BIGGER_MIB = 3072
SMALLER_MIB = 1536  # the root holds 0.9 GB; resize2fs -P asks 1.3 GB

V1 = {
    "/srv/data/notes.txt": b"Point one: the thesis as it was on Monday.\n",
    "/srv/data/photo.bin": secrets.token_bytes(8 << 20),
    "/srv/data/big.bin": secrets.token_bytes(48 << 20),
}
V2 = {
    "/srv/data/notes.txt": b"Point two: rewritten on Tuesday.\n",
    "/srv/data/new.bin": secrets.token_bytes(4 << 20),
}


def host_booted(serial: bytes, token: str) -> int:
    """The root filesystem's size the booted host reported; fails if it did not boot."""
    found = re.search(rf"HOST-BOOTED {token} rootsize=(\d+)".encode(), serial)
    assert found, f"the host disk did not boot:\n{serial.decode(errors='replace')[-3000:]}"
    return int(found.group(1))


class Lab:
    """The machine room: the appliance, the disks, the phase times."""

    def __init__(self, appliance: Context, work: Path, results: dict[str, object]) -> None:
        self.appliance = appliance
        self.work = work
        self.results = results
        self.host = work / "host.img"
        self.backup = work / "backup.img"
        self.token = secrets.token_hex(8)

    def timed(self, phase: str, seconds: float) -> None:
        self.results[f"e2e_seconds.{phase}"] = round(seconds)

    def run_appliance(self, phase: str, disks: list[Path], **orders: str) -> str:
        """Boot the appliance's ISO with ``orders`` as kernel parameters; return its line."""
        machine = appliance_machine(self.appliance, disks, orders)
        run = run_until_exit(machine, self.work / phase, timeout=1800)
        self.timed(phase, run.seconds)
        lines = result_lines(run.serial)
        assert len(lines) == 1, f"{phase}: expected one result line, got {lines}"
        assert lines[0].startswith("HOURGLASS-RESULT: OK "), f"{phase}: {lines[0]}"
        return lines[0]

    def boot_host(self, phase: str, disk: Path, firmware: str) -> int:
        machine = Machine(firmware, [Drive(disk, boot=True)], network=False, memory_mib=1024)
        run = run_until_exit(machine, self.work / phase, timeout=900)
        self.timed(phase, run.seconds)
        return host_booted(run.serial, self.token)

    def make_backup_drive(self) -> None:
        make_backup_drive(self.backup, self.work)

    def snapshots(self) -> list[dict[str, object]]:
        return repo_snapshots(self.backup, self.work)

    def change_host_files(self) -> None:
        with partition_mounted(self.host, 3, self.work / "host.mnt") as root:
            for path, content in V2.items():
                (root / path.lstrip("/")).write_bytes(content)
            (root / "srv" / "data" / "photo.bin").unlink()


def test_bare_metal_recovery(
    appliance: Context, tmp_path: Path, results: dict[str, object]
) -> None:
    lab = Lab(appliance, tmp_path, results)

    # 1. A real host disk. It is not booted here: each restored copy below boots, with
    #    BIOS and with UEFI, and reports the size of its root as the host's df sees it.
    started = time.monotonic()
    make_host_disk(lab.host, HOST_MIB, lab.token, V1)
    lab.timed("1_make_host_disk", time.monotonic() - started)
    root_size = root_filesystem_size(lab.host)
    fsck_clean(lab.host)

    # 2. The first unattended backup.
    lab.make_backup_drive()
    line = lab.run_appliance(
        "2_backup", [lab.host, lab.backup], run="backup", repo=REPO, passphrase_file=PASSPHRASE_FILE
    )
    assert "verified" in line

    # 3. Files change; the second backup.
    lab.change_host_files()
    lab.run_appliance(
        "3_backup_again",
        [lab.host, lab.backup],
        run="backup",
        repo=REPO,
        passphrase_file=PASSPHRASE_FILE,
    )
    snapshots = sorted(lab.snapshots(), key=lambda s: str(s["time"]))
    assert len(snapshots) == 2
    first = str(snapshots[0]["id"])
    assert int(str(snapshots[1]["stored"])) < int(str(snapshots[0]["stored"])) / 4, (
        "the second backup should add only what changed"
    )

    # 4. The disk dies and a larger one replaces it: the first point in time restored onto
    #    it, grown; it boots with UEFI, its root filesystem is larger, and its files are
    #    those of point 1 (what changed for point 2 is not there).
    bigger = tmp_path / "bigger.img"
    with bigger.open("wb") as f:
        f.truncate(BIGGER_MIB << 20)
    line = lab.run_appliance(
        "4_restore_grow",
        [bigger, lab.backup],
        run="restore",
        repo=REPO,
        passphrase_file=PASSPHRASE_FILE,
        snapshot=first,
        grow="1",
    )
    assert "grown" in line
    grown_size = lab.boot_host("4_grown_boots_uefi", bigger, "uefi")
    assert grown_size > root_size + ((BIGGER_MIB - HOST_MIB - 64) << 20), (root_size, grown_size)
    fsck_clean(bigger)
    paths = [*V1, "/srv/data/new.bin"]
    assert read_files(bigger, paths) == {**V1, "/srv/data/new.bin": b""}

    # 5. Onto a smaller disk with new ids, by the CLI on a machine with the backup drive (the
    #    engine the appliance runs; one more appliance run would cost CI minutes and prove
    #    no more than 2-4 do): the root shrinks to fit, the disk, partition and
    #    ESP ids are new, the root's UUID is kept (BIOS GRUB's core.img searches for it), and
    #    it boots with BIOS (core.img, new partition GUIDs) and with UEFI (the ESP's new
    #    UUID in its fstab) with the files of point 1 (issue 20).
    smaller = tmp_path / "smaller.img"
    with smaller.open("wb") as f:
        f.truncate(SMALLER_MIB << 20)
    started = time.monotonic()
    with (
        partition_mounted(lab.backup, 1, tmp_path / "backup.rw") as drive,
        attached(smaller) as target,
    ):
        out = hourglass(
            "restore",
            "--repo",
            drive / "repo",
            "--passphrase-file",
            drive / "passphrase",
            "--yes",
            "--new-ids",
            "--progress",
            "none",
            first,
            target,
        )
    lab.timed("5_restore_smaller", time.monotonic() - started)
    assert "Shrunk: partition 3: ext4 shrunk from" in out, out
    assert "Kept id: " in out and "New id: " in out, out
    old, new = blkid(lab.host), blkid(smaller)
    assert new[3]["UUID"] == old[3]["UUID"], "the root's UUID, which core.img searches for"
    assert new[3]["PARTUUID"] != old[3]["PARTUUID"] and new[2]["UUID"] != old[2]["UUID"]
    shrunk_size = lab.boot_host("5_shrunk_boots_bios", smaller, "bios")
    assert shrunk_size < root_size - ((HOST_MIB - SMALLER_MIB - 64) << 20), (root_size, shrunk_size)
    assert lab.boot_host("5_shrunk_boots_uefi", smaller, "uefi") == shrunk_size
    fsck_clean(smaller)
    assert read_files(smaller, list(V1)) == V1
