"""Small real filesystems in image files, opened read-write the way each one allows here."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from imaging.mounts.mountinfo import is_mounted
from tests.support import MiB, loop_device, sh

SIZES = {"ext4": 64, "xfs": 300, "btrfs": 120, "vfat": 64, "ntfs": 64, "exfat": 64}

MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"],
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "vfat": ["mkfs.vfat"],
    "ntfs": ["mkfs.ntfs", "-q", "-F", "-f"],
    "exfat": ["mkfs.exfat"],
}

# Filesystems this kernel mounts itself; the others go through FUSE drivers.
KERNEL = {"ext4", "xfs", "btrfs"}
FUSE_RW = {"ntfs": ["ntfs-3g", "-o", "rw"], "exfat": ["mount.exfat-fuse", "-o", "rw"]}


def make_fs(kind: str, path: Path, *extra: str) -> Path:
    with open(path, "wb") as f:
        f.truncate(SIZES[kind] * MiB)
    sh(*MKFS[kind], *extra, path)
    return path


@contextlib.contextmanager
def writable(kind: str, image: Path, mountpoint: Path) -> Iterator[Path]:
    """``image`` mounted read-write at ``mountpoint`` (not vfat: fusefat writes only
    experimentally; FAT images are written with mtools, see :func:`vfat_put`)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    if kind in KERNEL:
        with loop_device(image) as dev:
            sh("mount", dev, mountpoint)
            try:
                yield mountpoint
            finally:
                sh("umount", mountpoint)
        return
    with contextlib.ExitStack() as stack:
        device = stack.enter_context(loop_device(image)) if kind == "exfat" else str(image)
        sh(*FUSE_RW[kind], device, mountpoint)
        stack.callback(_unmount_fuse, mountpoint)
        yield mountpoint


def _unmount_fuse(mountpoint: Path) -> None:
    subprocess.run(["umount", str(mountpoint)], check=False)
    for _ in range(100):  # FUSE drivers finish writing after umount returns
        if not is_mounted(mountpoint):
            break
        time.sleep(0.05)
    time.sleep(0.2)


def vfat_put(image: Path, name: str, data: bytes, mtime: float, tmp: Path) -> None:
    """Write ``/name`` (directories created) into a FAT image with mtools, keeping mtime."""
    local = tmp / "mtools-src"
    local.write_bytes(data)
    import os

    os.utime(local, (mtime, mtime))
    parent = ""
    for part in name.strip("/").split("/")[:-1]:
        parent += "/" + part
        subprocess.run(
            ["mmd", "-D", "s", "-i", str(image), "::" + parent], check=False, capture_output=True
        )
    sh("mcopy", "-o", "-m", "-i", image, local, "::" + name)


def vfat_delete(image: Path, name: str) -> None:
    sh("mdel", "-i", image, "::" + name)
