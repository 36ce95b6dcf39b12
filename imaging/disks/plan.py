"""Backup plans for a whole disk, chosen partitions of one disk, or one filesystem.

A whole disk becomes a snapshot of kind ``disk``: the ``head`` image (boot code, the table, the
gap before the first partition where BIOS GRUB's core.img lives), one ``p<N>`` image per
partition read through the disk device at the partition's offset, and the partition table in
the manifest. Each partition is imaged with partclone's used-block map when partclone knows
its filesystem, raw (every block read, zero blocks skipped) otherwise.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import Any

from imaging.disks import crosscheck, filesystems, lvm, mounts, sysfs
from imaging.disks.discover import get_disk, read_image_file
from imaging.disks.model import Disk, Partition
from imaging.disks.table import PartitionTable, read_table
from imaging.errors import HourglassError, SourceError, UsageError
from imaging.image.backup import BackupPlan, ImageSource
from imaging.image.devices import device_size
from imaging.image.usedmap import UsedMap
from imaging.process import run
from imaging.repository import codec

FORCE_HINT = "--force images it anyway (experts only: the image may not mount or boot)."


def source_id(disk: Disk) -> str:
    """``disk:<model>:<serial>`` (so a restore can find the same disk again), else the by-id
    link or device path; ``file:<path>`` for an image file."""
    if disk.transport == "file":
        return f"file:{os.path.abspath(disk.device)}"
    if disk.serial:
        model = "_".join(disk.model.split()) or "unknown"
        return f"disk:{model}:{disk.serial}"
    return f"disk:{disk.by_id or disk.device}"


def disk_record(disk: Disk, table: PartitionTable) -> dict[str, Any]:
    """The manifest's ``disk`` object."""
    return {
        "model": disk.model,
        "serial": disk.serial,
        "by_id": disk.by_id,
        "device": disk.device,
        "transport": disk.transport,
        "size": disk.size,
        "logical_sector": disk.logical_sector,
        "physical_sector": disk.physical_sector,
        "table": table.to_dict(),
    }


def _refuse_if_busy(partitions: list[Partition], source: str, force: bool) -> list[str]:
    """SourceError for a partition mounted read-write or used as swap, unless ``force``;
    with ``force`` the reasons come back as warnings for the manifest."""
    swapping = set(mounts.swaps())
    reasons = []
    for p in partitions:
        if p.mounted_rw:
            reasons.append(
                f"{p.device} (partition {p.number}) is mounted read-write at {p.mountpoint}"
            )
        elif p.device and sysfs.name_of(p.device) in swapping:
            reasons.append(f"{p.device} (partition {p.number}) is in use as swap")
    if reasons and not force:
        raise SourceError(
            f"Cannot image {source}: {'; '.join(reasons)}. An image of a filesystem that is "
            "being written is inconsistent.",
            f"Unmount it (or remount it read-only) and run the backup again. {FORCE_HINT}",
        )
    return [f"imaged while in use: {r}" for r in reasons]


def _file_in_use(path: str, force: bool) -> list[str]:
    """An image file attached to a loop device whose filesystems are mounted read-write."""
    real = os.path.realpath(path)
    busy = []
    for name in sysfs.disk_names():
        if name.startswith("loop") and sysfs.backing_file(name) == real:
            for reason in mounts.in_use(name):
                if "read-only" not in reason:
                    busy.append(reason)
    if busy and not force:
        raise SourceError(
            f"Cannot image {path}: it is attached as a loop device and {'; '.join(busy)}.",
            f"Unmount it first. {FORCE_HINT}",
        )
    return [f"imaged while in use: {r}" for r in busy]


@contextlib.contextmanager
def partition_device(disk_path: str, part: Partition) -> Iterator[str]:
    """A block device holding just ``part``: its kernel node, or else (an image file, a disk
    whose table the kernel has not read) a read-only loop device over its byte range."""
    if part.device:
        yield part.device
        return
    loop = (
        run(
            [
                "losetup",
                "--find",
                "--show",
                "--read-only",
                "--offset",
                str(part.start),
                "--sizelimit",
                str(part.size),
                disk_path,
            ]
        )
        .stdout.decode()
        .strip()
    )
    try:
        yield loop
    finally:
        run(["losetup", "--detach", loop], check=False)


def _used_map(disk_path: str, part: Partition, block_size: int) -> tuple[UsedMap | None, str, str]:
    """(used map, method, note): partclone's map checked against the filesystem's own
    metadata, or raw with the reason. An LVM physical volume: its metadata and the used
    blocks of its logical volumes' filesystems (:mod:`imaging.disks.lvm`)."""
    if part.fstype == "LVM2_member":
        return _lvm_map(disk_path, part, block_size)
    if part.fstype not in filesystems.PARTCLONE:
        return None, "raw", ""
    checking = False
    try:
        with (
            partition_device(disk_path, part) as device,
            crosscheck.Opinion(device, part.fstype) as opinion,
        ):
            used = filesystems.used_map(
                device, part.fstype, part.size, block_size, mounted=bool(part.mountpoint)
            )
            checking = True
            used, warnings = opinion.checked(used)
    except HourglassError as e:
        if checking:  # nothing vouches for partclone's map: reading everything is safe
            return (
                None,
                "raw",
                (
                    f"the used-block map could not be checked against the {part.fstype} "
                    f"metadata, imaged raw: {e.message}"
                ),
            )
        return None, "raw", f"partclone could not map the used blocks, imaged raw: {e.message}"
    return used, f"partclone.{part.fstype}", "; ".join(warnings)


def _lvm_map(disk_path: str, part: Partition, block_size: int) -> tuple[UsedMap | None, str, str]:
    try:
        with partition_device(disk_path, part) as device:
            used, volumes = lvm.used_map(device, part.size, block_size)
    except HourglassError as e:
        return None, "raw", f"the LVM metadata could not be read, imaged raw: {e.message}"
    raw = [v.name for v in volumes if v.method == "raw"]
    note = ""
    if raw:
        what = "logical volume" if len(raw) == 1 else "logical volumes"
        note = f"{what} {', '.join(raw)} read whole (no filesystem partclone maps)"
    return used, "lvm", note


def _image(
    name: str, path: str, offset: int, part: Partition, entry: dict[str, Any], block_size: int
) -> tuple[ImageSource, str]:
    """The image of ``part``, read from ``path`` at ``offset``."""
    used, method, note = _used_map(path, part, block_size)
    meta: dict[str, Any] = {
        **({"number": part.number} if part.number else {}),
        "method": method,
        "fstype": part.fstype,
        "label": part.label,
        "uuid": part.fs_uuid,
        **entry,
    }
    if note:
        meta["note"] = note
    return ImageSource(name, path, offset, part.size, used=used, meta=meta), note


def plan_disk(
    path: str,
    *,
    only: set[int] | None = None,
    force: bool = False,
    block_size: int = codec.DEFAULT_BLOCK_SIZE,
) -> BackupPlan:
    """A ``disk`` plan: head, table and every partition (or only the numbers in ``only``)."""
    real = os.path.realpath(path)
    is_file = stat.S_ISREG(os.stat(real).st_mode)
    disk = read_image_file(real) if is_file else get_disk(real, used=False)
    table = read_table(real)
    if table is None:
        raise SourceError(f"{path} has no partition table.")
    by_number = {p.number: p for p in disk.partitions}
    chosen = [p for p in table.data_partitions if only is None or p.number in only]
    if only is not None and len(chosen) != len(only):
        missing = sorted(only - {p.number for p in chosen})
        raise UsageError(f"{path} has no data partition numbered {missing[0]}.")
    warnings = (
        _file_in_use(real, force)
        if is_file
        else _refuse_if_busy([by_number[p.number] for p in chosen], path, force)
    )
    images: list[ImageSource] = []
    head = table.head_size()
    if head > 0:
        images.append(ImageSource("head", real, 0, head, meta={"method": "raw"}))
    for entry in chosen:
        part = by_number[entry.number]
        entry_record = {
            "partuuid": part.uuid,
            "type": entry.type,
            "type_name": entry.type_name,
            "name": entry.name,
            "role": entry.role,
        }
        image, note = _image(f"p{entry.number}", real, part.start, part, entry_record, block_size)
        images.append(image)
        if note:
            warnings.append(f"p{entry.number}: {note}")
    record = disk_record(disk, table)
    if only is not None:
        record["imaged"] = sorted(only)
    extra: dict[str, Any] = {"disk": record}
    if warnings:
        extra["warnings"] = warnings
    return BackupPlan(
        source=path,
        source_id=source_id(disk),
        kind="disk",
        size=disk.size,
        images=images,
        extra=extra,
    )


def plan_filesystem(
    path: str, *, force: bool = False, block_size: int = codec.DEFAULT_BLOCK_SIZE
) -> BackupPlan:
    """A single ``data`` image of one partition (or a whole device or image file holding a
    filesystem without a table), with partclone's map when it knows the filesystem."""
    real = os.path.realpath(path)
    mode = os.stat(real).st_mode
    size = device_size(real)
    extra: dict[str, Any] = {}
    warnings: list[str] = []
    if stat.S_ISBLK(mode):
        name = sysfs.name_of(real)
        part = _partition_of(name, real, size)
        warnings = _refuse_if_busy([part], path, force)
        if sysfs.is_partition(name):
            disk = get_disk(f"/dev/{sysfs.parent_disk(name)}", used=False)
            extra["partition"] = {
                "disk": disk.title(),
                "disk_serial": disk.serial,
                "number": part.number,
                "start": part.start,
                "partuuid": part.uuid,
                "type": part.type,
                "name": part.name,
            }
        kind = "partition"
    else:
        warnings = _file_in_use(real, force)
        part = _whole(real, size)
        kind = "file"
    image, note = _image("data", real, 0, part, {}, block_size)
    if note:
        warnings.append(note)
    if warnings:
        extra["warnings"] = warnings
    if part.fs_uuid:
        ident = f"fs:{part.fs_uuid}"
    elif kind == "file":
        ident = f"file:{os.path.abspath(path)}"
    else:
        ident = f"device:{real}"
    return BackupPlan(
        source=path, source_id=ident, kind=kind, size=size, images=[image], extra=extra
    )


def _partition_of(name: str, real: str, size: int) -> Partition:
    """The Partition record for a partition node (from its disk's discovery) or for a whole
    device that holds a filesystem directly."""
    if sysfs.is_partition(name):
        disk = get_disk(f"/dev/{sysfs.parent_disk(name)}", used=False)
        for p in disk.partitions:
            if p.device == real:
                return p
    mounted = mounts.mounts_of(name)
    return _whole(
        real,
        size,
        number=sysfs.int_attr(name, "partition"),
        mountpoint=mounted[0].mountpoint if mounted else "",
        mounted_rw=any(not m.read_only for m in mounted),
    )


def _whole(path: str, size: int, **state: Any) -> Partition:
    """A Partition record for a filesystem that fills ``path`` (no table entry of its own)."""
    info = filesystems.probe(path)
    return Partition(
        number=state.pop("number", 0),
        device=path,
        start=0,
        size=size,
        type="",
        type_name="",
        fstype=info.fstype,
        label=info.label,
        fs_uuid=info.uuid,
        **state,
    )
