"""What discovery reports about disks and partitions (the app draws these)."""

from __future__ import annotations

from dataclasses import dataclass, field

from imaging.units import decimal_size, human_size


@dataclass(frozen=True)
class Partition:
    number: int
    device: str  # /dev/sda1; "" when the kernel made no node (an image file)
    start: int  # bytes from the start of the disk
    size: int  # bytes
    type: str  # GPT partition type GUID, or MBR type as "0x83"
    type_name: str  # "EFI System", "Linux filesystem", "BIOS boot", ...
    name: str = ""  # GPT partition name
    uuid: str = ""  # GPT unique partition GUID (PARTUUID) or MBR "sig-NN"
    fstype: str = ""  # ext4, xfs, btrfs, vfat, exfat, ntfs, crypto_LUKS, LVM2_member, ""
    label: str = ""  # filesystem label
    fs_uuid: str = ""  # filesystem UUID
    used: int | None = None  # bytes in use, where the filesystem can tell
    mountpoint: str = ""  # where it is mounted now, "" if not
    mounted_rw: bool = False
    role: str = "primary"  # MBR: "primary", "extended" or "logical"; GPT: always "primary"

    def describe(self) -> str:
        parts = [f"partition {self.number}", decimal_size(self.size)]
        if self.fstype:
            parts.append(self.fstype)
        if self.label:
            parts.append(f'"{self.label}"')
        elif self.name:
            parts.append(f'"{self.name}"')
        if self.used is not None:
            parts.append(f"{human_size(self.used)} used")
        return ", ".join(parts)


@dataclass(frozen=True)
class Disk:
    device: str  # /dev/sda
    by_id: str  # a stable /dev/disk/by-id/... path, "" if none
    model: str
    serial: str
    size: int  # bytes
    logical_sector: int
    physical_sector: int
    transport: str  # nvme, sata, usb, virtio, loop, scsi, ...
    removable: bool
    rotational: bool
    table: str  # "gpt", "msdos" or "" (no partition table)
    partitions: tuple[Partition, ...] = field(default_factory=tuple)
    is_boot_disk: bool = False  # the running system booted from it
    repositories: tuple[str, ...] = ()  # repository paths found on it (mounted paths)
    table_id: str = ""  # GPT disk GUID or MBR disk signature ("0x1a2b3c4d")
    backing_file: str = ""  # a loop device's file, or the image file itself (transport "file")

    @property
    def holds_repository(self) -> bool:
        return bool(self.repositories)

    @property
    def mounted(self) -> bool:
        return any(p.mountpoint for p in self.partitions)

    def title(self) -> str:
        """``Samsung SSD 860 (S3Z9NB0K123456), 250.1 GB``."""
        model = self.model or "Unknown disk"
        serial = f" ({self.serial})" if self.serial else ""
        backing = f" over {self.backing_file}" if self.backing_file else ""
        return f"{model}{serial}{backing}, {decimal_size(self.size)}"

    def describe(self) -> str:
        """What a confirmation must show: model, serial, size, and every partition."""
        lines = [f"{self.device}: {self.title()}"]
        if not self.partitions:
            lines.append("  no partitions" + (" (no partition table)" if not self.table else ""))
        lines.extend(f"  {p.describe()}" for p in self.partitions)
        return "\n".join(lines)
