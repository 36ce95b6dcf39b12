"""Partition tables: read them from a disk, record them in a manifest, recreate them.

Tables are created through pyparted (libparted): the partitions with their numbers, start and
end sectors, MBR primary/extended/logical roles and EBR chain, GPT names, the protective MBR
and the GPT backup header at the end of the target. libparted 3.5, the version Debian 12
ships, has no API for identifiers and types (:mod:`imaging.disks.ondisk` explains), so:

- writing a GPT lets libparted create the layout, then ``sgdisk`` (gdisk) sets what libparted
  cannot: partition numbers with gaps, type GUIDs, unique GUIDs, attribute bits and the disk
  GUID, all in one invocation;
- writing an MBR lets libparted create the layout and EBR chain, then the signature, type
  bytes, boot flags and slot order are patched into the sectors it wrote;
- what was written is read back twice, by libparted and from the on-disk structures, and
  both must equal what was asked for.

Reading a source disk does not go through libparted (see :func:`read_table`).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import locale
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from imaging.disks import ondisk, sysfs
from imaging.errors import HourglassError, SourceError, TargetUnsuitable
from imaging.image.devices import is_block_device, open_size
from imaging.libc import libc as load_libc
from imaging.process import run

BLKRRPART = 0x125F
BLKFLSBUF = 0x1261
MIB = 1024 * 1024
MBR_MAX_SECTORS = 2**32 - 1

GPT_TYPE_NAMES = {
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI System",
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Linux home",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "ca7d7ccb-63ed-4c53-861c-1742536059cc": "Linux LUKS",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac": "Windows recovery",
    "48465300-0000-11aa-aa11-00306543ecac": "Apple HFS+",
    "7c3457ef-0000-11aa-aa11-00306543ecac": "Apple APFS",
}
MBR_TYPE_NAMES = {
    0x01: "FAT12",
    0x04: "FAT16 <32M",
    0x05: "Extended",
    0x06: "FAT16",
    0x07: "NTFS/exFAT",
    0x0B: "FAT32",
    0x0C: "FAT32 (LBA)",
    0x0E: "FAT16 (LBA)",
    0x0F: "Extended (LBA)",
    0x27: "Windows recovery",
    0x82: "Linux swap",
    0x83: "Linux",
    0x85: "Linux extended",
    0x8E: "Linux LVM",
    0xA5: "FreeBSD",
    0xEE: "GPT protective",
    0xEF: "EFI System",
    0xFD: "Linux RAID",
}


@dataclass(frozen=True)
class TablePartition:
    """One entry of a partition table. Sectors are of the table's sector size."""

    number: int
    start: int  # first sector
    end: int  # last sector, inclusive
    type: str  # GPT type GUID (lower case) or MBR type byte as "0x83"
    role: str = "primary"  # MBR: primary, extended or logical
    guid: str = ""  # GPT unique partition GUID
    name: str = ""  # GPT partition name
    attributes: int = 0  # GPT attribute bits
    boot: bool = False  # MBR active flag

    @property
    def sectors(self) -> int:
        return self.end - self.start + 1

    @property
    def is_container(self) -> bool:
        """An MBR extended partition holds logical partitions, not data of its own."""
        return self.role == "extended"

    @property
    def type_name(self) -> str:
        if self.type.startswith("0x"):
            return MBR_TYPE_NAMES.get(int(self.type, 16), f"type {self.type}")
        return GPT_TYPE_NAMES.get(self.type, self.type)

    def to_dict(self, kind: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"number": self.number, "start": self.start, "end": self.end}
        entry["type"] = self.type
        if kind == "gpt":
            entry |= {"guid": self.guid, "name": self.name, "attributes": f"{self.attributes:#x}"}
        else:
            entry |= {"role": self.role, "boot": self.boot}
        return entry

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> TablePartition:
        return cls(
            number=int(entry["number"]),
            start=int(entry["start"]),
            end=int(entry["end"]),
            type=str(entry["type"]),
            role=str(entry.get("role", "primary")),
            guid=str(entry.get("guid", "")),
            name=str(entry.get("name", "")),
            attributes=int(str(entry.get("attributes", "0")), 0),
            boot=bool(entry.get("boot", False)),
        )


@dataclass(frozen=True)
class PartitionTable:
    kind: str  # "gpt" or "msdos"
    sector_size: int
    disk_id: str  # GPT disk GUID, or MBR disk signature as "0x1a2b3c4d"
    partitions: tuple[TablePartition, ...] = field(default_factory=tuple)
    first_usable: int = 0  # GPT only
    last_usable: int = 0  # GPT only

    def partition(self, number: int) -> TablePartition:
        for p in self.partitions:
            if p.number == number:
                return p
        raise KeyError(number)

    @property
    def data_partitions(self) -> list[TablePartition]:
        """Partitions that hold data (an MBR extended container does not)."""
        return [p for p in self.partitions if not p.is_container]

    def head_size(self) -> int:
        """Bytes before the first partition: boot code, the table, the gap (GRUB's core.img)."""
        if not self.partitions:
            return min(MIB, self.backup_area())
        return min(p.start for p in self.partitions) * self.sector_size

    def end(self) -> int:
        """Byte just past the last partition."""
        return max((p.end + 1 for p in self.partitions), default=1) * self.sector_size

    def backup_area(self) -> int:
        """Bytes a GPT needs after its last usable sector: entry array and backup header."""
        if self.kind != "gpt":
            return 0
        return (1 + -(-(128 * 128) // self.sector_size)) * self.sector_size

    def required_size(self) -> int:
        """The smallest disk that holds every partition where it is now."""
        return self.end() + self.backup_area()

    def last_partition(self) -> TablePartition | None:
        """The data partition that ends last on the disk."""
        data = self.data_partitions
        return max(data, key=lambda p: p.end) if data else None

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"type": self.kind, "sector_size": self.sector_size}
        if self.kind == "gpt":
            result |= {
                "disk_guid": self.disk_id,
                "first_usable": self.first_usable,
                "last_usable": self.last_usable,
            }
        else:
            result["signature"] = self.disk_id
        result["partitions"] = [p.to_dict(self.kind) for p in self.partitions]
        return result

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartitionTable:
        kind = str(data["type"])
        return cls(
            kind=kind,
            sector_size=int(data["sector_size"]),
            disk_id=str(data["disk_guid"] if kind == "gpt" else data["signature"]),
            partitions=tuple(TablePartition.from_dict(p) for p in data["partitions"]),
            first_usable=int(data.get("first_usable", 0)),
            last_usable=int(data.get("last_usable", 0)),
        )

    def with_new_ids(self) -> PartitionTable:
        """The same layout with a fresh disk GUID/signature and fresh partition GUIDs."""
        if self.kind == "gpt":
            return replace(
                self,
                disk_id=str(uuid.uuid4()),
                partitions=tuple(replace(p, guid=str(uuid.uuid4())) for p in self.partitions),
            )
        return replace(self, disk_id=f"{secrets.randbits(32) | 1:#010x}")

    def differences(self, other: PartitionTable) -> list[str]:
        """What differs between two tables, ignoring what depends on the disk's size."""
        diffs = []
        for name in ("kind", "sector_size", "disk_id"):
            if getattr(self, name) != getattr(other, name):
                diffs.append(f"{name}: {getattr(self, name)} != {getattr(other, name)}")
        mine = {p.number: p for p in self.partitions}
        theirs = {p.number: p for p in other.partitions}
        for number in sorted(set(mine) | set(theirs)):
            if number not in mine or number not in theirs:
                diffs.append(f"partition {number} is missing on one side")
            elif mine[number] != theirs[number]:
                diffs.append(f"partition {number}: {mine[number]} != {theirs[number]}")
        return diffs


# --- pyparted plumbing ----------------------------------------------------------------------


class _Pyparted:
    """pyparted, imported when first used: importing it runs ``dmidecode`` (about 20 ms and a
    child process), and most commands read tables from the on-disk structures only."""

    def __getattr__(self, name: str) -> Any:
        import parted  # noqa: PLC0415

        return getattr(parted, name)


parted: Any = _Pyparted()


class _Problems:
    """libparted's questions during one operation, answered without ever choosing "Fix"."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, exc: Any) -> int:

        self.messages.append(str(exc.message))
        if exc.options & parted.EXCEPTION_RESOLVE_IGNORE:
            return int(parted.EXCEPTION_RESOLVE_IGNORE)
        if exc.type in (parted.EXCEPTION_TYPE_INFORMATION, parted.EXCEPTION_TYPE_WARNING) and (
            exc.options & parted.EXCEPTION_RESOLVE_OK
        ):
            return int(parted.EXCEPTION_RESOLVE_OK)
        return int(parted.EXCEPTION_RESOLVE_CANCEL)


PARTED_EXCEPTIONS = (
    "AlignmentException",
    "ConstraintException",
    "CreateException",
    "DeviceException",
    "DiskException",
    "DiskLabelException",
    "FileSystemException",
    "GeometryException",
    "IOException",
    "PartedException",
    "PartitionException",
    "UnknownDeviceException",
    "UnknownTypeException",
)


def parted_errors() -> tuple[type[BaseException], ...]:
    """Every exception class pyparted raises (they share no common base)."""

    found = (getattr(parted, name, None) for name in PARTED_EXCEPTIONS)
    return tuple(cls for cls in found if isinstance(cls, type))


UTF8_LOCALES = (b"C.UTF-8", b"C.utf8", b"en_US.UTF-8")


@contextlib.contextmanager
def _utf8_ctype() -> Iterator[None]:
    """Let libparted see UTF-8 as this thread's character set, whatever the process's locale.

    libparted converts GPT names between the UTF-16 on disk and ``char *`` through iconv with
    ``nl_langinfo(CODESET)``; pyparted hands it UTF-8. Under ``LC_ALL=C`` (where Python runs
    in UTF-8 mode but the C locale stays ASCII) a non-ASCII name fails to convert and
    ``set_name`` ends in a SystemError. ``uselocale`` changes the locale of the calling thread
    only (``setlocale`` would change it under every thread of the app), and writing names
    with ``sgdisk --change-name`` instead would cut a name at its first colon.
    """

    if locale.nl_langinfo(locale.CODESET).replace("-", "").upper() == "UTF8":
        yield
        return
    libc = load_libc()
    libc.newlocale.restype = ctypes.c_void_p
    libc.newlocale.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
    libc.uselocale.restype = ctypes.c_void_p
    libc.uselocale.argtypes = [ctypes.c_void_p]
    libc.freelocale.argtypes = [ctypes.c_void_p]
    utf8 = None
    for name in UTF8_LOCALES:
        if utf8 := libc.newlocale(1 << locale.LC_CTYPE, name, None):
            break
    if not utf8:
        yield  # only ASCII names can be converted: write_table says so for the others
        return
    previous = libc.uselocale(utf8)
    try:
        yield
    finally:
        libc.uselocale(previous)
        libc.freelocale(utf8)


@contextlib.contextmanager
def _parted_device(path: str) -> Iterator[tuple[Any, _Problems]]:
    """A libparted device for ``path``, dropped from libparted's cache afterwards (its size
    would be stale once a file target grows). GPT names convert as UTF-8 inside."""

    problems = _Problems()
    parted.register_exn_handler(problems)
    device = None
    try:
        try:
            device = parted.getDevice(path)
        except parted_errors() as e:
            raise SourceError(f"libparted cannot open {path}: {e}") from e
        with _utf8_ctype():
            yield device, problems
    finally:
        if device is not None:
            with contextlib.suppress(Exception):
                device.removeFromCache()
        parted.clear_exn_handler()


# --- reading --------------------------------------------------------------------------------


class _Layout(NamedTuple):
    """What libparted says about one partition."""

    number: int
    start: int
    end: int
    role: str
    name: str
    boot: bool


def read_table(path: str) -> PartitionTable | None:
    """The GPT or MBR on the disk or image file ``path``; None when it has no table.

    Read from the on-disk structures with the device opened read-only: libparted opens a
    disk read-write, and closing a disk opened for writing makes udev synthesize a change
    event and re-read its partition table (partition nodes vanish and come back) - not
    something discovery or a running backup may cause."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise SourceError(f"Cannot open {path}: {e.strerror}.") from e
    try:
        sector_size = _sector_size(path)
        kind = ondisk.detect(fd, sector_size, open_size(fd))
        if kind == "gpt":
            return _from_gpt(ondisk.read_gpt(fd, sector_size, open_size(fd)), sector_size)
        if kind == "msdos":
            return _from_mbr(ondisk.read_mbr(fd, sector_size), sector_size)
        return None
    finally:
        os.close(fd)


def _sector_size(path: str) -> int:
    if is_block_device(path):
        return sysfs.sector_sizes(sysfs.name_of(path))[0]
    return 512


def _from_gpt(raw: ondisk.GptFields, sector_size: int) -> PartitionTable:
    return PartitionTable(
        kind="gpt",
        sector_size=sector_size,
        disk_id=raw.disk_guid,
        partitions=tuple(
            TablePartition(
                number=e.number,
                start=e.first,
                end=e.last,
                type=e.type_guid,
                guid=e.unique_guid,
                name=e.name,
                attributes=e.attributes,
            )
            for e in sorted(raw.entries.values(), key=lambda e: e.number)
        ),
        first_usable=raw.first_usable,
        last_usable=raw.last_usable,
    )


def _from_mbr(raw: ondisk.MbrFields, sector_size: int) -> PartitionTable:
    return PartitionTable(
        kind="msdos",
        sector_size=sector_size,
        disk_id=f"{raw.signature:#010x}",
        partitions=tuple(
            TablePartition(
                number=e.number,
                start=e.first,
                end=e.first + e.sectors - 1,
                type=f"{e.type:#04x}",
                role=e.role,
                boot=e.boot,
            )
            for e in sorted(raw.entries.values(), key=lambda e: e.number)
        ),
    )


def libparted_disagreements(path: str, table: PartitionTable) -> list[str]:
    """Where libparted's reading of ``path`` differs from ``table`` in what it can report
    (numbers, sectors, roles, GPT names, MBR boot flags). Used on what Hourglass just wrote:
    a target it opened for writing anyway."""

    with _parted_device(path) as (device, problems):
        try:
            disk = parted.newDisk(device)
        except parted_errors() as e:
            detail = "; ".join(problems.messages) or str(e)
            return [f"libparted cannot read it: {detail}"]
        if disk.type != table.kind:
            return [f"libparted reads a {disk.type} label"]
        seen: list[_Layout] = []
        for part in disk.partitions:
            role = "primary"
            if part.type & parted.PARTITION_EXTENDED:
                role = "extended"
            elif part.type & parted.PARTITION_LOGICAL:
                role = "logical"
            name = ""
            if table.kind == "gpt":
                with contextlib.suppress(SystemError, *parted_errors()):
                    name = part.name or ""
            boot = table.kind == "msdos" and bool(part.getFlag(parted.PARTITION_BOOT))
            seen.append(
                _Layout(
                    int(part.number),
                    int(part.geometry.start),
                    int(part.geometry.end),
                    role,
                    name,
                    boot,
                )
            )
    wanted = [
        _Layout(p.number, p.start, p.end, p.role, p.name, p.boot and table.kind == "msdos")
        for p in table.partitions
    ]
    if sorted(seen) == sorted(wanted):
        return []
    return [f"libparted reads {sorted(seen)}, expected {sorted(wanted)}"]


# --- writing --------------------------------------------------------------------------------


def write_table(path: str, table: PartitionTable) -> None:
    """Create ``table`` on ``path`` (a disk or an image file), replacing whatever was there,
    then read it back and raise if it differs from what was asked."""

    with _parted_device(path) as (device, problems):
        if int(device.sectorSize) != table.sector_size:
            raise TargetUnsuitable(
                f"{path} has {device.sectorSize}-byte sectors; the snapshot's table uses "
                f"{table.sector_size}-byte sectors.",
                "Restore to a disk with the same logical sector size, or restore partitions "
                "one by one.",
            )
        try:
            disk = parted.freshDisk(device, table.kind)
            primaries = sorted(
                (p for p in table.partitions if p.role != "logical"), key=lambda p: p.number
            )
            logicals = sorted(
                (p for p in table.partitions if p.role == "logical"), key=lambda p: p.number
            )
            for entry in primaries + logicals:
                kind = {
                    "extended": parted.PARTITION_EXTENDED,
                    "logical": parted.PARTITION_LOGICAL,
                }.get(entry.role, parted.PARTITION_NORMAL)
                geometry = parted.Geometry(device=device, start=entry.start, end=entry.end)
                part = parted.Partition(disk=disk, type=kind, geometry=geometry)
                disk.addPartition(part, constraint=parted.Constraint(exactGeom=geometry))
                if table.kind == "gpt" and entry.name:
                    _set_name(part, entry.name, path)
            disk.commitToDevice()
        except parted_errors() as e:
            detail = "; ".join(problems.messages) or str(e)
            raise HourglassError(f"Writing the partition table to {path} failed: {detail}") from e
    if table.kind == "gpt":
        _finish_gpt(path, table)
    else:
        _finish_mbr(path, table)
    written = read_table(path)
    diffs = table.differences(written) if written else ["no table"]
    diffs += libparted_disagreements(path, table)
    if diffs:
        raise HourglassError(
            f"The partition table written to {path} differs from the snapshot's: "
            + "; ".join(diffs[:3])
        )


def _set_name(part: Any, name: str, path: str) -> None:
    """Give ``part`` its GPT name; a failed conversion surfaces as a SystemError from
    pyparted, which ``parted_errors`` does not catch."""
    try:
        part.set_name(name)
    except SystemError as e:
        raise HourglassError(
            f"libparted cannot write the partition name {name!r} to {path}: this system "
            "has no UTF-8 locale (C.UTF-8).",
            "The partition table was not written. Run the restore where a UTF-8 locale "
            "exists, or rename the partition afterwards with sgdisk --change-name.",
        ) from e


def _finish_gpt(path: str, table: PartitionTable) -> None:
    """Numbers, types, GUIDs and attributes, which libparted 3.5 cannot set, via sgdisk."""
    ordered = sorted(table.partitions, key=lambda p: p.number)
    argv = ["sgdisk"]
    for made, entry in reversed(list(enumerate(ordered, start=1))):
        if made != entry.number:
            argv += [f"--transpose={made}:{entry.number}"]
    argv += [f"--disk-guid={table.disk_id}"]
    for entry in ordered:
        argv += [
            f"--typecode={entry.number}:{entry.type}",
            f"--partition-guid={entry.number}:{entry.guid}",
            f"--attributes={entry.number}:=:{entry.attributes:016x}",
        ]
    run([*argv, path])


def _finish_mbr(path: str, table: PartitionTable) -> None:
    wanted = {p.number: (p.boot, int(p.type, 16)) for p in table.partitions}
    fd = os.open(path, os.O_RDWR)
    try:
        ondisk.patch_mbr(fd, table.sector_size, int(table.disk_id, 16), wanted)
        os.fsync(fd)
    finally:
        os.close(fd)


def table_area(path: str, table: PartitionTable) -> list[tuple[int, int]]:
    """The byte ranges of the head that belong to the table on ``path`` (written by
    :func:`write_table`), as opposed to boot code and gap (copied from the snapshot)."""
    ss = table.sector_size
    if table.kind == "msdos":
        return [(440, ss - 440)]
    fd = os.open(path, os.O_RDONLY)
    try:
        entries_end = ondisk.gpt_entries_end(fd, ss)
    finally:
        os.close(fd)
    return [(440, entries_end - 440)]


# --- the kernel's view ----------------------------------------------------------------------


def kernel_matches(path: str, table: PartitionTable) -> bool:
    """True when the kernel's partitions of the disk ``path`` are those of ``table``
    (an extended container is left out: the kernel gives it one or two sectors)."""
    ss = table.sector_size
    containers = {p.number for p in table.partitions if p.is_container}
    have = {
        (p.number, p.start, p.size)
        for p in sysfs.partitions(sysfs.name_of(path))
        if p.number not in containers
    }
    want = {(p.number, p.start * ss, p.sectors * ss) for p in table.data_partitions}
    return have == want


def reread_partitions(path: str, table: PartitionTable) -> str:
    """Make the kernel use the new table: BLKRRPART, or, where the kernel cannot parse the
    table itself or refuses, libparted's per-partition updates (BLKPG). Then drop every
    partition's page cache, which can hold blocks read before the restore wrote through the
    whole disk. Returns how it was done."""

    how = "BLKRRPART"
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.ioctl(fd, BLKRRPART)
        except OSError as e:
            how = f"BLKRRPART failed ({e.strerror})"
    finally:
        os.close(fd)
    if not kernel_matches(path, table):
        with _parted_device(path) as (device, problems):
            try:
                parted.newDisk(device).commitToOS()
            except parted_errors() as e:
                detail = "; ".join(problems.messages) or str(e)
                raise HourglassError(
                    f"The kernel did not take the new partition table of {path}: {detail}",
                    "Unplug and replug the disk (or reboot) before using its partitions.",
                ) from e
        how = "libparted (BLKPG)" if how == "BLKRRPART" else f"{how}; libparted (BLKPG)"
        if not kernel_matches(path, table):
            raise HourglassError(
                f"The kernel still shows the old partitions of {path}.",
                "Unplug and replug the disk (or reboot) before using its partitions.",
            )
    flush_partition_caches(path)
    return how


def flush_partition_caches(path: str) -> None:
    for part in sysfs.partitions(sysfs.name_of(path)):
        with contextlib.suppress(OSError):
            fd = os.open(part.device, os.O_RDONLY)
            try:
                fcntl.ioctl(fd, BLKFLSBUF)
            finally:
                os.close(fd)
