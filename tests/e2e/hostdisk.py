"""A real PC system disk for the end-to-end test: Debian 12 that boots with BIOS and UEFI.

The root comes from mmdebstrap (a kernel, systemd, GRUB's modules from the build machine),
cached as a tarball by its inputs in build/work/cache. The disk is GPT with a BIOS boot
partition (GRUB's core for BIOS), an EFI system partition (GRUB as the removable
BOOTX64.EFI for UEFI) and an ext4 root. At boot a unit prints
``HOST-BOOTED <token> rootsize=<bytes>`` on the first serial port and powers off.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from build.context import MIRROR, REPOSITORY, SUITE
from tests.imaging.disks.helpers import attached

CACHE = REPOSITORY / "build" / "work" / "cache"
# The agent's package needs the last six (its Depends: build/deb.py), for the test of the
# whole PC as of a second; one root for every e2e test, so CI runs mmdebstrap once.
PACKAGES = (
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "e2fsprogs",
    "initramfs-tools",
    "kmod",
    "fuse3",
    "mount",
    "python3",
    "python3-parted",
    "python3-pyudev",
    "python3-venv",
)
ROOT_LABEL = "hostroot"

BOOTED_UNIT = """\
[Unit]
Description=Tell the end-to-end test this disk booted
After=local-fs.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/host-booted

[Install]
WantedBy=multi-user.target
"""

BOOTED_SCRIPT = """\
#!/bin/sh
size=$(df -B1 --output=size / | tail -n 1 | tr -d ' ')
printf '\\r\\nHOST-BOOTED %s rootsize=%s\\r\\n' "$(cat /etc/e2e-token)" "$size" > /dev/ttyS0
systemctl --no-block poweroff
"""

GRUB_CFG = """\
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search --no-floppy --fs-uuid --set=root {uuid}
linux /vmlinuz root=UUID={uuid} ro console=ttyS0,115200n8 loglevel=4
initrd /initrd.img
boot
"""


def sh(*argv: str | Path) -> str:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def host_root() -> Path:
    """The host's root as a tarball (mmdebstrap), built once per package list."""
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(PACKAGES)}".encode()).hexdigest()[:16]
    tarball = CACHE / f"e2e-host-{key}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial")
    sh(
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--format=tar",
        "--include=" + ",".join(PACKAGES),
        '--aptopt=Acquire::Retries "3"',
        "--customize-hook=echo e2e-host > $1/etc/hostname",
        SUITE,
        partial,
        f"deb {MIRROR} {SUITE} main",
    )
    partial.rename(tarball)
    return tarball


@contextlib.contextmanager
def mounted(device: str, where: Path, *options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    sh("mount", *options, device, where)
    try:
        yield where
    finally:
        sh("umount", where)


@contextlib.contextmanager
def partition_mounted(image: Path, number: int, where: Path, *options: str) -> Iterator[Path]:
    """Partition ``number`` of the disk image ``image``, mounted on ``where``."""
    with attached(image) as device, mounted(f"{device}p{number}", where, *options) as root:
        yield root


def make_host_disk(image: Path, size_mib: int, token: str, files: dict[str, bytes]) -> None:
    """Write a bootable host disk to ``image``; ``files`` go into its root (path: content)."""
    tarball = host_root()
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(size_mib << 20)
    sh(
        "sgdisk",
        "--new=1:1MiB:+1MiB",
        "--typecode=1:ef02",
        "--change-name=1:bios",
        "--new=2:0:+64MiB",
        "--typecode=2:ef00",
        "--change-name=2:esp",
        "--new=3:0:0",
        "--typecode=3:8304",
        "--change-name=3:root",
        image,
    )
    with attached(image) as device:
        sh("mkfs.vfat", "-F", "32", "-n", "ESP", f"{device}p2")
        sh("mkfs.ext4", "-q", "-L", ROOT_LABEL, f"{device}p3")
        uuid = sh("blkid", "-s", "UUID", "-o", "value", f"{device}p3").strip()
        esp_uuid = sh("blkid", "-s", "UUID", "-o", "value", f"{device}p2").strip()
        mnt = image.parent / f"{image.stem}.mnt"
        with mounted(f"{device}p3", mnt) as root:
            sh("tar", "-xpf", tarball, "-C", root)
            (root / "etc" / "fstab").write_text(
                f"UUID={uuid} / ext4 errors=remount-ro 0 1\n"
                f"UUID={esp_uuid} /boot/efi vfat umask=0077,nofail 0 2\n"
            )
            (root / "etc" / "e2e-token").write_text(token + "\n")
            unit = root / "etc" / "systemd" / "system" / "host-booted.service"
            unit.write_text(BOOTED_UNIT)
            wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants"
            wants.mkdir(parents=True, exist_ok=True)
            (wants / "host-booted.service").symlink_to("/etc/systemd/system/host-booted.service")
            script = root / "usr" / "local" / "sbin" / "host-booted"
            script.write_text(BOOTED_SCRIPT)
            script.chmod(0o755)
            for path, content in files.items():
                target = root / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            (root / "boot" / "efi").mkdir(parents=True, exist_ok=True)
            sh("grub-install", "--target=i386-pc", f"--boot-directory={root}/boot", device)
            (root / "boot" / "grub" / "grub.cfg").write_text(GRUB_CFG.format(uuid=uuid))
        install_uefi_grub(f"{device}p2", uuid, image.parent)
        mnt.rmdir()


def install_uefi_grub(esp: str, uuid: str, scratch: Path) -> None:
    """GRUB for UEFI as the removable BOOTX64.EFI, copied in with mtools (the kernel that runs
    the tests may have no FAT driver). A standalone image: its modules are inside it, and
    it reads the root's /boot/grub/grub.cfg, which the BIOS GRUB reads too."""
    early = scratch / "grub-early.cfg"
    early.write_text(
        f"search --no-floppy --fs-uuid --set=root {uuid}\nconfigfile ($root)/boot/grub/grub.cfg\n"
    )
    efi = scratch / "BOOTX64.EFI"
    sh(
        "grub-mkstandalone",
        "--format=x86_64-efi",
        f"--output={efi}",
        "--modules=part_gpt ext2 search_fs_uuid serial linux",
        f"boot/grub/grub.cfg={early}",
    )
    sh("mmd", "-i", esp, "::/EFI", "::/EFI/BOOT")
    sh("mcopy", "-i", esp, efi, "::/EFI/BOOT/BOOTX64.EFI")
    early.unlink()
    efi.unlink()


def read_files(image: Path, paths: list[str], partition: int = 3) -> dict[str, bytes]:
    """The content of ``paths`` on partition ``partition`` of ``image`` (mounted read-only)."""
    with attached(image) as device:
        mnt = image.parent / f"{image.stem}.read"
        with mounted(f"{device}p{partition}", mnt, "-o", "ro") as root:
            found = {}
            for path in paths:
                target = root / path.lstrip("/")
                found[path] = target.read_bytes() if target.exists() else b""
        mnt.rmdir()
        return found


def blkid(image: Path, partitions: tuple[int, ...] = (2, 3)) -> dict[int, dict[str, str]]:
    """``blkid -o export`` of each of ``partitions`` of ``image``: UUID, PARTUUID, LABEL..."""
    with attached(image) as device:
        found = {}
        for number in partitions:
            lines = sh("blkid", "-o", "export", f"{device}p{number}").splitlines()
            found[number] = dict(line.split("=", 1) for line in lines if "=" in line)
        return found


def root_filesystem_size(image: Path, partition: int = 3) -> int:
    """The root's size as ``df`` on the booted host reports it (f_blocks x f_frsize)."""
    with attached(image) as device:
        mnt = image.parent / f"{image.stem}.df"
        with mounted(f"{device}p{partition}", mnt, "-o", "ro") as root:
            st = os.statvfs(root)
        mnt.rmdir()
        return st.f_blocks * st.f_frsize


def fsck_clean(image: Path, partition: int = 3) -> None:
    """e2fsck -fn of a partition: raises with its report when it finds anything."""
    with attached(image) as device:
        sh("e2fsck", "-fn", f"{device}p{partition}")


def wipe(image: Path) -> None:
    """Every byte of ``image`` zero again, as after a disk failure and replacement."""
    size = image.stat().st_size
    with image.open("r+b") as f:
        f.truncate(0)
        f.truncate(size)
    os.sync()
