"""Facts about block devices read from /sys, which the kernel keeps whether or not udev runs.

Names are kernel names (``sda``, ``sda2``, ``nvme0n1p1``, ``loop3``); sizes in /sys are always
in 512-byte units, whatever the device's sector size.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from imaging.errors import SourceError

SYS_BLOCK = Path("/sys/class/block")
SYS_DEV_BLOCK = Path("/sys/dev/block")
SYSFS_SECTOR = 512


@dataclass(frozen=True)
class KernelPartition:
    """A partition as the kernel knows it now (it may differ from the table on disk)."""

    name: str
    number: int
    start: int  # bytes
    size: int  # bytes

    @property
    def device(self) -> str:
        return f"/dev/{self.name}"


def attr(name: str, *parts: str) -> str:
    """``/sys/class/block/<name>/<parts...>`` stripped, or "" when absent or unreadable."""
    try:
        return SYS_BLOCK.joinpath(name, *parts).read_text(errors="replace").strip()
    except OSError:
        return ""


def int_attr(name: str, *parts: str, default: int = 0) -> int:
    text = attr(name, *parts)
    try:
        return int(text)
    except ValueError:
        return default


def exists(name: str) -> bool:
    return (SYS_BLOCK / name).exists()


def name_of(device: str) -> str:
    """The kernel name of the block device at ``device`` (a /dev path or a symlink to one)."""
    real = os.path.realpath(device)
    try:
        st = os.stat(real)
    except OSError as e:
        raise SourceError(f"{device} does not exist.") from e
    if not stat.S_ISBLK(st.st_mode):
        raise SourceError(f"{device} is not a block device.")
    name = name_of_numbers(os.major(st.st_rdev), os.minor(st.st_rdev))
    if name is None:
        raise SourceError(f"The kernel does not list {device} under /sys/class/block.")
    return name


def name_of_numbers(major: int, minor: int) -> str | None:
    link = SYS_DEV_BLOCK / f"{major}:{minor}"
    try:
        return os.path.basename(os.path.realpath(link)) if link.exists() else None
    except OSError:
        return None


def numbers(name: str) -> tuple[int, int]:
    major, _, minor = attr(name, "dev").partition(":")
    return int(major or -1), int(minor or -1)


def is_partition(name: str) -> bool:
    return (SYS_BLOCK / name / "partition").exists()


def parent_disk(name: str) -> str:
    """The disk a partition belongs to; a disk is its own parent."""
    if not is_partition(name):
        return name
    return os.path.basename(os.path.dirname(os.path.realpath(SYS_BLOCK / name)))


def size(name: str) -> int:
    return int_attr(name, "size") * SYSFS_SECTOR


def sector_sizes(name: str) -> tuple[int, int]:
    """(logical, physical) sector size in bytes."""
    logical = int_attr(name, "queue", "logical_block_size", default=512) or 512
    physical = int_attr(name, "queue", "physical_block_size", default=logical) or logical
    return logical, physical


def partitions(disk: str) -> list[KernelPartition]:
    """The partitions the kernel has made nodes for, by number."""
    result = []
    base = SYS_BLOCK / disk
    try:
        children = list(base.iterdir())
    except OSError:
        return []
    for child in children:
        if not (child / "partition").exists():
            continue
        name = child.name
        result.append(
            KernelPartition(
                name=name,
                number=int_attr(name, "partition"),
                start=int_attr(name, "start") * SYSFS_SECTOR,
                size=size(name),
            )
        )
    return sorted(result, key=lambda p: p.number)


def slaves(name: str) -> list[str]:
    try:
        return sorted(p.name for p in (SYS_BLOCK / name / "slaves").iterdir())
    except OSError:
        return []


def holders(name: str) -> list[str]:
    try:
        return sorted(p.name for p in (SYS_BLOCK / name / "holders").iterdir())
    except OSError:
        return []


def backing_file(name: str) -> str:
    """The file behind a loop device, "" for anything else or a detached loop."""
    text = attr(name, "loop", "backing_file")
    return text.removesuffix(" (deleted)")


def loop_window(name: str) -> tuple[int, int]:
    """(offset, sizelimit) of a loop device in its backing file; sizelimit 0 = to the end."""
    return int_attr(name, "loop", "offset"), int_attr(name, "loop", "sizelimit")


def transport(name: str) -> str:
    """nvme, sata, usb, virtio, loop, mmc, scsi, xen, or "" when it cannot be told."""
    if name.startswith("loop"):
        return "loop"
    if name.startswith("nvme"):
        return "nvme"
    if name.startswith("mmcblk"):
        return "mmc"
    try:
        path = os.path.realpath(SYS_BLOCK / name)
    except OSError:
        return ""
    for marker, kind in (
        ("/usb", "usb"),
        ("/virtio", "virtio"),
        ("/ata", "sata"),
        ("/vbd-", "xen"),
        ("/nvme", "nvme"),
        ("/mmc", "mmc"),
        ("/host", "scsi"),
    ):
        if marker in path:
            return kind
    return ""


def model(name: str) -> str:
    if name.startswith("loop"):
        return "Loop device"
    text = attr(name, "device", "model")
    if not text and name.startswith("vd"):
        return "Virtio disk"
    return " ".join(text.split())


def serial(name: str) -> str:
    """The serial number as the disk reports it; "" when it has none we can read."""
    for parts in (("device", "serial"), ("serial",)):
        text = attr(name, *parts)
        if text:
            return text.strip()
    vpd = _vpd_serial(name)
    if vpd:
        return vpd
    return _usb_serial(name)


def _vpd_serial(name: str) -> str:
    """SCSI/SATA disks: the Unit Serial Number VPD page (0x80)."""
    try:
        data = (SYS_BLOCK / name / "device" / "vpd_pg80").read_bytes()
    except OSError:
        return ""
    if len(data) < 4:
        return ""
    length = int.from_bytes(data[2:4], "big")
    return data[4 : 4 + length].decode("ascii", errors="replace").strip()


def _usb_serial(name: str) -> str:
    """A USB stick's serial is on its USB device, a few levels up."""
    try:
        path = Path(os.path.realpath(SYS_BLOCK / name))
    except OSError:
        return ""
    for parent in path.parents:
        if (parent / "idVendor").exists():
            try:
                return (parent / "serial").read_text().strip()
            except OSError:
                return ""
    return ""


def removable(name: str) -> bool:
    return attr(name, "removable") == "1"


def rotational(name: str) -> bool:
    return attr(name, "queue", "rotational") == "1"


def disk_names() -> list[str]:
    """Every whole disk the kernel lists, without partitions."""
    try:
        names = [p.name for p in SYS_BLOCK.iterdir()]
    except OSError:
        return []
    return sorted(n for n in names if not is_partition(n))
