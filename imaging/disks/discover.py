"""Which disks there are, what is on them, which one the system booted from.

Disks are enumerated with pyudev. Where udev runs, its database gives model, serial, bus and
the ``/dev/disk/by-id`` links; where it does not (a minimal rescue system, a container), the
same facts come from /sys, partitions from the table on the disk (pyparted) and filesystems
from ``blkid -p``, so discovery works the same either way.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pyudev

from imaging.disks import facts, filesystems, mounts, sysfs
from imaging.disks.model import Disk, Partition
from imaging.disks.repos import FoundRepository, mounted_repositories
from imaging.disks.table import PartitionTable, read_table
from imaging.errors import HourglassError, SourceError, UsageError
from imaging.mounts import mountinfo

T = TypeVar("T")
UDEV_CONTROL = Path("/run/udev/control")
BY_ID = Path("/dev/disk/by-id")

# Mount points that belong to the running system: the disks under them are boot disks.
BOOT_MOUNTPOINTS = (
    "/",
    "/boot",
    "/boot/efi",
    "/efi",
    "/usr",
    "/cdrom",
    "/run/live/medium",
    "/lib/live/mount/medium",
    "/run/initramfs/live",
    "/run/archiso/bootmnt",
)
# Kernel names that are never disks a person images or restores to.
IGNORED_PREFIXES = ("ram", "zram", "sr", "fd", "dm-", "md", "nbd", "drbd", "mtdblock")


def udev_running() -> bool:
    """True when udevd runs, so its database and events can be used."""
    return UDEV_CONTROL.exists()


def list_disks(*, used: bool = True) -> list[Disk]:
    """Every disk with its partitions, marked when it is the boot disk or holds a repository.

    ``used=False`` skips asking each filesystem how much it uses (faster)."""
    return list(iter_disks(used=used))


def iter_disks(*, used: bool = True) -> Iterator[Disk]:
    """The disks of :func:`list_disks`, each as soon as it has been read."""
    all_mounts = mountinfo.mounts()
    boot = boot_disk_names(all_mounts)
    for name, properties in _enumerate():
        if not is_listed(name):
            continue
        try:
            disk = _read_block_disk(name, properties, used=used, all_mounts=all_mounts, boot=boot)
        except HourglassError:
            continue  # a disk that vanished or cannot be read is left out, not fatal
        yield _with_repositories(disk, mounted_repositories([disk], all_mounts))


def is_listed(name: str) -> bool:
    """True for a whole disk (kernel name) that :func:`list_disks` shows."""
    if name.startswith(IGNORED_PREFIXES) or sysfs.size(name) == 0:
        return False
    return not (("boot" in name and name.startswith("mmcblk")) or sysfs.attr(name, "hidden") == "1")


def get_disk(path: str, *, used: bool = True) -> Disk:
    """The disk at ``path``: /dev/sdX, a /dev/disk/by-id link, a loop device, or a whole-disk
    image file (transport ``file``)."""
    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode
    except OSError:
        raise SourceError(f"{path} does not exist.") from None
    all_mounts = mountinfo.mounts()
    if stat.S_ISREG(mode):
        return read_image_file(real, used=used)
    if not stat.S_ISBLK(mode):
        raise SourceError(f"{path} is neither a disk nor an image file.")
    name = sysfs.name_of(real)
    if sysfs.is_partition(name):
        parent = sysfs.parent_disk(name)
        raise UsageError(
            f"{path} is partition {sysfs.int_attr(name, 'partition')} of /dev/{parent}, "
            "not a disk.",
            f"Name the disk (/dev/{parent}).",
        )
    disk = _read_block_disk(
        name,
        _udev_properties(name),
        used=used,
        all_mounts=all_mounts,
        boot=boot_disk_names(all_mounts),
    )
    return _with_repositories(disk, mounted_repositories([disk], all_mounts))


def _with_repositories(disk: Disk, found: list[FoundRepository]) -> Disk:
    paths = tuple(r.path for r in found if r.disk == disk.device)
    return replace(disk, repositories=paths) if paths else disk


def _enumerate() -> list[tuple[str, dict[str, str]]]:
    """(kernel name, udev properties) of every whole disk; pyudev, or /sys without it."""
    try:
        context = pyudev.Context()
        result = []
        for device in context.list_devices(subsystem="block", DEVTYPE="disk"):
            result.append((device.sys_name, _properties(device)))
        return sorted(result)
    except Exception:  # pyudev or libudev missing: /sys says the same
        return [(name, {}) for name in sysfs.disk_names()]


def _properties(device: Any) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in device.properties.items()}
    except Exception:
        return {}


def _udev_properties(name: str) -> dict[str, str]:
    try:
        return _properties(pyudev.Devices.from_name(pyudev.Context(), "block", name))
    except Exception:
        return {}


def _decode(text: str) -> str:
    """udev's ``\\x20``-escaped strings (ID_MODEL_ENC)."""
    with contextlib.suppress(UnicodeDecodeError, ValueError):
        text = text.encode("latin-1").decode("unicode_escape")
    return " ".join(text.split())


def _by_id(name: str, properties: dict[str, str]) -> str:
    """The most telling /dev/disk/by-id link for the disk: bus-model-serial before WWN."""
    links = [link for link in properties.get("DEVLINKS", "").split() if link.startswith(str(BY_ID))]
    if not links and BY_ID.is_dir():
        with contextlib.suppress(OSError):
            for link in BY_ID.iterdir():
                if os.path.realpath(link) == f"/dev/{name}":
                    links.append(str(link))
    if not links:
        return ""

    def rank(link: str) -> tuple[int, int, str]:
        base = os.path.basename(link)
        weak = base.startswith(("wwn-", "nvme-eui.", "nvme-nvme.", "dm-", "lvm-"))
        return (1 if weak else 0, len(base), base)

    return sorted(links, key=rank)[0]


def _transport(name: str, properties: dict[str, str]) -> str:
    known = sysfs.transport(name)
    if known:
        return known
    bus = properties.get("ID_BUS", "")
    return {"ata": "sata", "usb": "usb", "scsi": "scsi", "nvme": "nvme"}.get(bus, bus)


def _read_block_disk(
    name: str,
    properties: dict[str, str],
    *,
    used: bool,
    all_mounts: list[mountinfo.Mount],
    boot: set[str],
) -> Disk:
    device = f"/dev/{name}"
    logical, physical = sysfs.sector_sizes(name)
    model = _decode(properties.get("ID_MODEL_ENC", "")) or sysfs.model(name)
    serial = properties.get("ID_SERIAL_SHORT", "") or sysfs.serial(name)
    table, problem = _table(device)
    kernel = {p.number: p for p in sysfs.partitions(name)}
    partitions = []
    if table is not None:
        ss = table.sector_size
        for tp in table.partitions:
            start, size = tp.start * ss, tp.sectors * ss
            node = kernel.get(tp.number)
            node_path = node.device if node and (node.start, node.size) == (start, size) else ""
            partitions.append(
                _partition(device, tp.number, node_path, start, size, tp, used, all_mounts)
            )
        partitions = [_with_partuuid(p, table) for p in partitions]
    elif problem:  # a table libparted cannot read: show what the kernel made of it
        for kp in kernel.values():
            partitions.append(
                _partition(device, kp.number, kp.device, kp.start, kp.size, None, used, all_mounts)
            )
    return Disk(
        device=device,
        by_id=_by_id(name, properties),
        model=model,
        serial=serial,
        size=sysfs.size(name),
        logical_sector=logical,
        physical_sector=physical,
        transport=_transport(name, properties),
        removable=sysfs.removable(name),
        rotational=sysfs.rotational(name),
        table=table.kind if table else "",
        partitions=tuple(partitions),
        is_boot_disk=name in boot,
        table_id=table.disk_id if table else "",
        backing_file=sysfs.backing_file(name) if name.startswith("loop") else "",
    )


def _table(path: str) -> tuple[PartitionTable | None, str]:
    try:
        return read_table(path), ""
    except HourglassError as e:
        return None, e.message


def _partition(
    disk: str,
    number: int,
    node: str,
    start: int,
    size: int,
    entry: Any,
    used: bool,
    all_mounts: list[mountinfo.Mount],
) -> Partition:
    role = entry.role if entry is not None else "primary"
    # blkid and partclone are asked once per change of the partition (facts.change_key);
    # an image file is read directly (it has no counters to tell a change by).
    key: tuple[object, ...] | None = None
    if disk.startswith("/dev/"):
        key = (start, size, *facts.change_key(disk, node))
    where = node or f"{disk}@{start}"
    if role == "extended":
        info = filesystems.FsInfo()
    elif node:
        info = _fact("blkid", where, key, lambda: filesystems.probe(node))
    else:
        info = _fact("blkid", where, key, lambda: filesystems.probe(disk, start, size))
    mountpoint, rw = "", False
    if node:
        mounted = mounts.mounts_of(sysfs.name_of(node), all_mounts)
        if mounted:
            mountpoint = mounted[0].mountpoint
            rw = any(not m.read_only for m in mounted)
    used_bytes = None
    if used and node and info.fstype:
        if mountpoint:  # statvfs: cheap and always current
            used_bytes = filesystems.used_bytes(node, info.fstype, mountpoint)
        else:
            fstype = info.fstype
            used_bytes = _fact("used", where, key, lambda: filesystems.used_bytes(node, fstype))
    return Partition(
        number=number,
        device=node,
        start=start,
        size=size,
        type=entry.type if entry is not None else "",
        type_name=entry.type_name if entry is not None else "",
        name=entry.name if entry is not None else "",
        fstype=info.fstype,
        label=info.label,
        fs_uuid=info.uuid,
        used=used_bytes,
        mountpoint=mountpoint,
        mounted_rw=rw,
        role=role,
    )


def _fact(what: str, where: str, key: tuple[object, ...] | None, compute: Callable[[], T]) -> T:
    if key is None:
        return compute()
    return facts.CACHE.get(what, where, key, compute)


def _with_partuuid(partition: Partition, table: PartitionTable) -> Partition:
    """PARTUUID as the kernel and fstab spell it: the GPT unique GUID, or for an MBR the
    signature and number (``1234abcd-05``)."""
    if table.kind == "gpt":
        uuid = table.partition(partition.number).guid
    else:
        uuid = f"{int(table.disk_id, 16):08x}-{partition.number:02d}"
    return replace(partition, uuid=uuid)


def read_image_file(path: str, *, used: bool = False) -> Disk:
    """A whole-disk image file described like a disk (transport ``file``, no serial)."""
    size = os.path.getsize(path)
    table, _ = _table(path)
    partitions = []
    if table is not None:
        ss = table.sector_size
        for tp in table.partitions:
            partitions.append(
                _partition(path, tp.number, "", tp.start * ss, tp.sectors * ss, tp, used, [])
            )
        partitions = [_with_partuuid(p, table) for p in partitions]
    sector = table.sector_size if table else 512
    return Disk(
        device=path,
        by_id="",
        model="Image file",
        serial="",
        size=size,
        logical_sector=sector,
        physical_sector=sector,
        transport="file",
        removable=False,
        rotational=False,
        table=table.kind if table else "",
        partitions=tuple(partitions),
        table_id=table.disk_id if table else "",
        backing_file=path,
    )


def boot_disk_names(all_mounts: list[mountinfo.Mount] | None = None) -> set[str]:
    """Kernel names of the disks the running system was started from: those under /, /boot,
    the EFI partition and a live system's medium (through its squashfs loop device)."""
    result: set[str] = set()
    for m in all_mounts if all_mounts is not None else mountinfo.mounts():
        if m.mountpoint not in BOOT_MOUNTPOINTS and not m.mountpoint.startswith("/run/live/"):
            continue
        name = mounts.block_name(m)
        if name is not None:
            result |= mounts.disks_below(name)
    return result
