"""The one mount table and the one unmount, against real filesystems on loop devices."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from imaging.errors import Busy, ToolMissing
from imaging.mounts import drivers, mountinfo
from imaging.mounts.drivers import REPOSITORY_FILESYSTEMS, Mode, driver_for
from imaging.mounts.mount import mount, unmount
from tests.support import MiB, have, loop_device, sh


@pytest.mark.parametrize("mode", list(Mode))
def test_ntfs_is_always_ntfs3g(mode: Mode) -> None:
    """One NTFS driver in both modes, whatever the kernel has (see drivers' docstring)."""
    driver = driver_for("ntfs", mode)
    assert driver is not None and driver.kernel is None and driver.fuse == "ntfs-3g"
    assert driver.options == ("ro" if mode is Mode.READ_ONLY else "rw")


@pytest.mark.parametrize("mode", list(Mode))
def test_xfs_copies_can_be_mounted_side_by_side(mode: Mode) -> None:
    if not drivers.kernel_has("xfs"):
        pytest.skip("the kernel has no xfs")
    driver = driver_for("xfs", mode)
    assert driver is not None and "nouuid" in driver.options.split(",")


def test_read_only_never_replays_a_journal() -> None:
    for fstype, option in (("ext4", "noload"), ("ext3", "noload"), ("xfs", "norecovery")):
        if drivers.kernel_has(drivers.KERNEL[fstype][0]):
            driver = driver_for(fstype, Mode.READ_ONLY)
            assert driver is not None and option in driver.options.split(",")


def test_fat_without_a_kernel_driver_is_written_through_fusefat_rw_plus() -> None:
    if drivers.kernel_has("vfat"):
        pytest.skip("the kernel has vfat: its driver is used")
    writable = driver_for("FAT32", Mode.READ_WRITE)
    assert writable is not None and (writable.fuse, writable.options) == ("fusefat", "rw+")
    image = driver_for("vfat", Mode.READ_ONLY)
    assert image is not None and not image.needs_block_device  # fusefat reads the file


def test_what_a_repository_can_live_on() -> None:
    assert set(REPOSITORY_FILESYSTEMS) == {
        "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "exfat", "ntfs"
    }  # fmt: skip
    assert driver_for("iso9660", Mode.READ_WRITE) is None
    assert driver_for("swap", Mode.READ_ONLY) is None


def test_no_driver_is_said_plainly(tmp_path: Path) -> None:
    with pytest.raises(ToolMissing, match="cannot mount swap"):
        mount("/dev/null", "swap", str(tmp_path / "m"), Mode.READ_ONLY)
    assert not (tmp_path / "m").exists()


@pytest.mark.root
@pytest.mark.skipif(not have("mkntfs"), reason="needs mkntfs (ntfs-3g)")
def test_ntfs_read_write_then_read_only(tmp_path: Path) -> None:
    image = tmp_path / "ntfs.img"
    with open(image, "wb") as f:
        f.truncate(16 * MiB)
    sh("mkntfs", "-q", "-F", "-f", image)
    where = tmp_path / "mnt"
    with loop_device(image) as device:
        mount(device, "ntfs", str(where), Mode.READ_WRITE)
        try:
            (found,) = [m for m in mountinfo.mounts() if m.mountpoint == str(where)]
            assert found.fstype == "fuseblk" and not found.read_only
            (where / "kept.txt").write_text("written through ntfs-3g")
        finally:
            unmount(str(where), remove=True)
        assert not where.exists()
        mount(device, "ntfs", str(where), Mode.READ_ONLY)
        try:
            assert (where / "kept.txt").read_text() == "written through ntfs-3g"
            with pytest.raises(OSError):
                (where / "other.txt").write_text("refused")
        finally:
            unmount(str(where), remove=True)


@pytest.mark.root
def test_a_busy_filesystem_is_busy_unless_lazy(tmp_path: Path) -> None:
    where = tmp_path / "busy"
    where.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", where)
    holder = subprocess.Popen(["sleep", "60"], cwd=where)
    try:
        with pytest.raises(Busy, match="in use"):
            unmount(str(where))
        assert mountinfo.is_mounted(where)
        unmount(str(where), lazy=True)
        assert not mountinfo.is_mounted(where)
    finally:
        holder.kill()
        holder.wait()
        subprocess.run(["umount", "-l", str(where)], check=False)
    unmount(str(where), remove=True)  # nothing mounted: only the directory goes
    assert not os.path.exists(where)
