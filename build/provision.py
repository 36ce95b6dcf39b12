"""Preload a backup drive: it boots the appliance and holds an empty repository.

GPT layout written by :func:`provision`:

    1  BIOS boot   1 MiB    GRUB's core.img for BIOS machines
    2  EFI system  1 GiB    FAT32: shim, signed GRUB, menu, kernel, initrd, root image
    3  data        rest     ext4 (or exFAT) labelled HOURGLASS-DATA, repository in /hourglass

Nothing is written before the person confirmed the disk by name (or ``--yes``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from build.context import Context
from build.errors import BuildError, NotRoot
from build.pipeline import render_menu, staged_boot_file, write
from imaging.errors import Cancelled, UsageError
from imaging.process import run

log = logging.getLogger("build")

MiB = 1024 * 1024
SECTOR = 512
ESP_MIB = 1024
DATA_LABEL = "HOURGLASS-DATA"
REPOSITORY_DIR = "hourglass"
FILESYSTEMS = ("ext4", "exfat")
# GRUB modules built into the BIOS core.img, so the ESP needs no i386-pc module folder.
BIOS_GRUB_MODULES = (
    "biosdisk", "part_gpt", "part_msdos", "fat", "ext2", "search", "search_fs_file",
    "search_label", "configfile", "normal", "linux", "echo", "test", "serial", "terminal",
    "sleep", "all_video", "gzio", "minicmd",
)  # fmt: skip


@dataclass
class DiskInfo:
    device: str
    size: int
    model: str
    serial: str
    contents: list[str]

    def describe(self) -> str:
        lines = [
            f"{self.device}: {self.model or 'unknown model'}, serial {self.serial or 'unknown'}, "
            f"{self.size / 1e9:.1f} GB ({self.size / 2**30:.1f} GiB)"
        ]
        lines += [f"  {c}" for c in self.contents] or ["  no partitions or file systems found"]
        return "\n".join(lines)


def disk_info(device: str) -> DiskInfo:
    """Model, serial, size and what is on the disk, from lsblk."""
    result = run(
        [
            "lsblk",
            "--json",
            "--bytes",
            "-o",
            "NAME,PATH,SIZE,TYPE,MODEL,SERIAL,FSTYPE,LABEL,MOUNTPOINT",
            device,
        ]
    )
    tree = json.loads(result.stdout)["blockdevices"][0]
    contents = []
    for child in tree.get("children", []):
        size = int(child["size"]) / 1e9
        what = (
            ", ".join(v for v in (child.get("fstype"), child.get("label")) if v) or "no file system"
        )
        mounted = f", mounted on {child['mountpoint']}" if child.get("mountpoint") else ""
        contents.append(f"{child['path']}: {size:.1f} GB, {what}{mounted}")
    return DiskInfo(
        device=tree["path"],
        size=int(tree["size"]),
        model=(tree.get("model") or "").strip(),
        serial=(tree.get("serial") or "").strip(),
        contents=contents,
    )


def mounted_devices() -> set[str]:
    devices = set()
    for line in Path("/proc/mounts").read_text().splitlines():
        source = line.split()[0]
        if source.startswith("/dev/"):
            devices.add(os.path.realpath(source))
    return devices


def partitions(device: str) -> dict[int, str]:
    """Partition number -> device node, from sysfs."""
    name = Path(os.path.realpath(device)).name
    found = {}
    for entry in Path(f"/sys/class/block/{name}").iterdir():
        number = entry / "partition"
        if number.exists():
            found[int(number.read_text())] = f"/dev/{entry.name}"
    return found


@contextlib.contextmanager
def block_device(target: Path) -> Iterator[str]:
    """The target as a block device: a disk as it is, an image file on a loop device."""
    if target.is_block_device():
        yield str(target)
        return
    if not target.is_file():
        raise UsageError(f"{target} is neither a disk nor a disk image file.")
    device = run(["losetup", "--show", "--find", "--partscan", target]).stdout.decode().strip()
    # Some kernels do not scan GPT on loop devices themselves (no CONFIG_EFI_PARTITION).
    run(["partx", "--update", device], check=False)
    try:
        yield device
    finally:
        run(["losetup", "-d", device], check=False)


def confirm(info: DiskInfo, ask: Callable[[str], str]) -> None:
    """Ask the person to type the disk's name; anything else cancels."""
    name = Path(info.device).name
    print("Provisioning ERASES this disk:\n" + info.describe(), file=sys.stderr)
    answer = ask(f"Type {name} to erase it and make it a backup drive: ").strip()
    if answer not in (name, info.device):
        raise Cancelled(f"Nothing was written to {info.device}.")


def provision(
    ctx: Context,
    target: Path,
    *,
    filesystem: str = "ext4",
    encryption: str = "aes-256-gcm",
    passphrase: Callable[[], str] | None = None,
    yes: bool = False,
    ask: Callable[[str], str] = input,
) -> DiskInfo:
    """Erase ``target`` and make it a bootable backup drive with an empty repository."""
    if os.geteuid() != 0:
        raise NotRoot(
            "Provisioning a disk needs root.", "Run it as root, e.g. sudo make provision."
        )
    if filesystem not in FILESYSTEMS:
        raise UsageError(
            f"Unknown file system {filesystem!r}; choose one of {', '.join(FILESYSTEMS)}."
        )
    for built in (ctx.kernel, ctx.initrd, ctx.squashfs):
        if not built.exists():
            raise BuildError(f"{built} is missing.", "Build the appliance first: make image.")
    with block_device(target) as device:
        info = disk_info(device)
        busy = [p for p in partitions(device).values() if os.path.realpath(p) in mounted_devices()]
        if busy or os.path.realpath(device) in mounted_devices():
            raise UsageError(
                f"{device} is in use (mounted: {', '.join(busy) or device}).", "Unmount it first."
            )
        needed = (ESP_MIB + 64) * MiB + ctx.squashfs.stat().st_size
        if info.size < needed:
            raise UsageError(
                f"{device} is too small: {info.size / 2**30:.1f} GiB; "
                f"at least {needed / 2**30:.1f} GiB are needed."
            )
        if not target.is_block_device():
            print(f"(The image file {target}, attached as {device}.)", file=sys.stderr)
        if not yes:
            confirm(info, ask)
        # Ask for the passphrase before anything is written: a mistyped confirmation must
        # not leave a wiped disk without a repository.
        secret = passphrase() if passphrase is not None and encryption != "none" else None
        log.info("==> provision %s", device)
        write_partition_table(device, filesystem)
        parts = partitions(device)
        if sorted(parts) != [1, 2, 3]:
            raise BuildError(
                f"Expected partitions 1-3 on {device} after partitioning, found {parts}."
            )
        fill_esp(ctx, parts[2])
        install_bios_grub(ctx, device, first_lba=2048)
        make_data_partition(parts[3], filesystem, encryption, secret)
        run(["sync"])
        return info


def write_partition_table(device: str, filesystem: str) -> None:
    data_type = "8300" if filesystem == "ext4" else "0700"
    run(["wipefs", "--all", "--quiet", device])
    run(["sgdisk", "--zap-all", device], check=False)
    run(
        [
            "sgdisk",
            "--new=1:2048:+1M",
            "--typecode=1:EF02",
            "--change-name=1:BIOS boot",
            f"--new=2:0:+{ESP_MIB}M",
            "--typecode=2:EF00",
            "--change-name=2:HOURGLASS-EFI",
            "--new=3:0:0",
            f"--typecode=3:{data_type}",
            f"--change-name=3:{DATA_LABEL}",
            device,
        ]
    )
    run(["partprobe", device], check=False)
    run(["partx", "--update", device], check=False)
    run(["udevadm", "settle"], check=False)


def fill_esp(ctx: Context, esp: str) -> None:
    """FAT32 with shim, signed GRUB, the menu and the live files, written with mtools."""
    run(["mkfs.vfat", "-F", "32", "-n", "HOURGLASS", esp])
    with tempfile.TemporaryDirectory(prefix="hourglass-esp-") as tmp:
        staging = Path(tmp)
        for name in ("shimx64.efi", "grubx64.efi", "mmx64.efi"):
            staged_boot_file(ctx, name, staging / name)
        grub = render_menu(
            ctx,
            "grub.cfg.in",
            base="boot=live",
            kernel="/live/vmlinuz",
            initrd="/live/initrd.img",
            where="backup drive, UEFI and BIOS",
        )
        write(staging / "grub.cfg", grub, ctx.epoch)
        write(staging / "info", f"{ctx.vendor.name} {ctx.version} amd64 backup drive\n", ctx.epoch)
        files = {
            "EFI/BOOT/BOOTX64.EFI": staging / "shimx64.efi",
            "EFI/BOOT/grubx64.efi": staging / "grubx64.efi",
            "EFI/BOOT/mmx64.efi": staging / "mmx64.efi",
            "boot/grub/grub.cfg": staging / "grub.cfg",
            ".disk/info": staging / "info",
            "live/vmlinuz": ctx.kernel,
            "live/initrd.img": ctx.initrd,
            "live/filesystem.squashfs": ctx.squashfs,
        }
        for directory in ("EFI", "EFI/BOOT", "boot", "boot/grub", ".disk", "live"):
            run(["mmd", "-i", esp, f"::/{directory}"])
        for inside, source in files.items():
            run(["mcopy", "-i", esp, source, f"::/{inside}"])


def install_bios_grub(ctx: Context, device: str, first_lba: int) -> None:
    """GRUB for BIOS machines: boot.img in the MBR, core.img in the BIOS boot partition.

    What grub-bios-setup does (it is not packaged without grub-pc, which would take over the
    build host's boot loader): point boot.img at core.img's first sector and core.img's
    first sector (diskboot) at the rest of it.
    """
    grub_dir = Path("/usr/lib/grub/i386-pc")
    if not (grub_dir / "boot.img").exists():
        raise BuildError(f"{grub_dir} not found.", "Install it with: apt install grub-pc-bin")
    with tempfile.TemporaryDirectory(prefix="hourglass-grub-") as tmp:
        early = Path(tmp) / "early.cfg"
        early.write_text(
            "search --no-floppy --file --set=root /.disk/info\n"
            "set prefix=($root)/boot/grub\n"
            "configfile $prefix/grub.cfg\n"
        )
        core_path = Path(tmp) / "core.img"
        run(
            [
                "grub-mkimage",
                "-O",
                "i386-pc",
                "-o",
                core_path,
                "-p",
                "/boot/grub",
                "-c",
                early,
                "-d",
                grub_dir,
                *BIOS_GRUB_MODULES,
            ]
        )
        core = bytearray(core_path.read_bytes())
    if len(core) > 1 * MiB:
        raise BuildError(
            f"GRUB's core.img is {len(core)} bytes; the BIOS boot partition has 1 MiB."
        )
    core += bytes(-len(core) % SECTOR)
    sectors = len(core) // SECTOR
    # diskboot.img's block list (the last 12 bytes of its sector): start, length, segment.
    struct.pack_into("<QH", core, SECTOR - 12, first_lba + 1, sectors - 1)
    boot = bytearray((grub_dir / "boot.img").read_bytes())
    with open(device, "r+b") as disk:
        mbr = disk.read(SECTOR)
        boot[0x1B8:SECTOR] = mbr[0x1B8:SECTOR]  # disk signature and the protective MBR
        struct.pack_into("<Q", boot, 0x5C, first_lba)  # where core.img starts
        boot[0x66:0x68] = b"\x90\x90"  # no floppy drive check: boot from any BIOS drive
        disk.seek(first_lba * SECTOR)
        disk.write(core)
        disk.seek(0)
        disk.write(boot)
        disk.flush()
        os.fsync(disk.fileno())


def make_data_partition(
    partition: str, filesystem: str, encryption: str, passphrase: str | None
) -> None:
    """ext4 or exFAT labelled HOURGLASS-DATA with an empty repository in /hourglass."""
    # Late on purpose: `python -m build` runs with Debian's Python, before any venv with the
    # engine's dependencies (blake3, zstandard, cryptography) exists; only provisioning,
    # which needs root and the venv anyway, loads the repository code.
    from imaging.repository.store import Repository  # noqa: PLC0415

    if filesystem == "ext4":
        run(["mkfs.ext4", "-q", "-F", "-L", DATA_LABEL, "-m", "0", partition])
    else:
        run(["mkfs.exfat", "-L", DATA_LABEL[:11], partition])
    with tempfile.TemporaryDirectory(prefix="hourglass-data-") as mountpoint:
        mount = ["mount", partition, mountpoint]
        if filesystem == "exfat" and not exfat_in_kernel():
            mount = ["mount.exfat-fuse", partition, mountpoint]
        run(mount)
        try:
            Repository.init(
                Path(mountpoint) / REPOSITORY_DIR, encryption=encryption, passphrase=passphrase
            )
        finally:
            run(["umount", mountpoint])


def exfat_in_kernel() -> bool:
    with contextlib.suppress(OSError):
        if "exfat" in Path("/proc/filesystems").read_text():
            return True
    return (
        shutil.which("modprobe") is not None
        and run(["modprobe", "exfat"], check=False).returncode == 0
    )
