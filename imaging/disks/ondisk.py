"""The partition-table fields libparted 3.5 (Debian 12) does not expose, read from the disk.

libparted reads and writes the layout (numbers, start and end sectors, MBR extended and
logical partitions, GPT names, the EBR chain), but its 3.5 API has no call for the GPT disk
GUID, a partition's type GUID or unique GUID, the GPT attribute bits, the MBR disk signature
or an MBR partition's type byte (``ped_partition_get_type_uuid`` and friends came in 3.6).
Both formats are fixed structures (UEFI spec 2.10 section 5.3; the MBR/EBR layout), so they
are read here directly. Writing GPT fields is left to ``sgdisk``; the MBR type bytes, boot
flags, slot order and signature are patched here into the sectors libparted wrote.
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from dataclasses import dataclass, field

from imaging.errors import SourceError

GPT_SIGNATURE = b"EFI PART"
MBR_MAGIC = b"\x55\xaa"
EXTENDED_TYPES = (0x05, 0x0F, 0x85)
PROTECTIVE_TYPE = 0xEE
MAX_LOGICAL = 128  # a loop in a damaged EBR chain must end somewhere


@dataclass(frozen=True)
class GptEntry:
    number: int
    type_guid: str
    unique_guid: str
    first: int
    last: int
    attributes: int
    name: str


@dataclass(frozen=True)
class GptFields:
    disk_guid: str
    first_usable: int
    last_usable: int
    entries_lba: int
    entry_count: int
    entry_size: int
    entries: dict[int, GptEntry]


@dataclass(frozen=True)
class MbrEntry:
    number: int
    boot: bool
    type: int
    first: int  # absolute sector
    sectors: int
    role: str  # primary, extended, logical
    location: tuple[int, int]  # (sector of the MBR or EBR, slot 0..3) holding this entry


@dataclass(frozen=True)
class MbrFields:
    signature: int
    entries: dict[int, MbrEntry] = field(default_factory=dict)


def read_at(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise SourceError(f"Short read at byte {offset}: the device ended early.")
    return data


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw))


def _parse_gpt_header(raw: bytes) -> tuple[int, int, int, int, int, int, str, int, int] | None:
    if raw[:8] != GPT_SIGNATURE:
        return None
    header_size = struct.unpack_from("<I", raw, 12)[0]
    if not 92 <= header_size <= len(raw):
        return None
    header = bytearray(raw[:header_size])
    crc = struct.unpack_from("<I", header, 16)[0]
    header[16:20] = b"\0\0\0\0"
    if zlib.crc32(header) != crc:
        return None
    (current, backup, first, last) = struct.unpack_from("<QQQQ", raw, 24)
    disk_guid = _guid(raw[56:72])
    entries_lba, count, size, entries_crc = struct.unpack_from("<QIII", raw, 72)
    return current, backup, first, last, entries_lba, count, disk_guid, size, entries_crc


def read_gpt(fd: int, sector_size: int, device_size: int) -> GptFields:
    """The GPT's identifiers and attributes: the primary header, or the backup when the
    primary is damaged (as libparted does)."""
    last_lba = device_size // sector_size - 1
    for lba in (1, last_lba):
        header = _parse_gpt_header(read_at(fd, lba * sector_size, sector_size))
        if header is None:
            continue
        _, _, first, last, entries_lba, count, disk_guid, size, entries_crc = header
        if size < 128 or count > 4096:
            continue
        array = read_at(fd, entries_lba * sector_size, count * size)
        if zlib.crc32(array) != entries_crc:
            continue
        entries = {}
        for i in range(count):
            raw = array[i * size : i * size + 128]
            if raw[:16] == bytes(16):
                continue
            first_lba, last_lba_entry, attributes = struct.unpack_from("<QQQ", raw, 32)
            name = raw[56:128].decode("utf-16-le", errors="replace").split("\0", 1)[0]
            entries[i + 1] = GptEntry(
                number=i + 1,
                type_guid=_guid(raw[0:16]),
                unique_guid=_guid(raw[16:32]),
                first=first_lba,
                last=last_lba_entry,
                attributes=attributes,
                name=name,
            )
        return GptFields(disk_guid, first, last, entries_lba, count, size, entries)
    raise SourceError("The GPT is damaged: neither the primary nor the backup header is valid.")


def _mbr_slots(sector: bytes) -> list[tuple[int, int, int, int]]:
    """(status, type, relative start, sectors) of the four slots of an MBR or EBR."""
    return [struct.unpack_from("<B3xB3xII", sector, 446 + 16 * i) for i in range(4)]


def read_mbr(fd: int, sector_size: int) -> MbrFields:
    """Disk signature and every entry, primary and logical, with where it is stored."""
    sector0 = read_at(fd, 0, sector_size)
    if sector0[510:512] != MBR_MAGIC:
        raise SourceError("The MBR has no boot signature (55 AA).")
    signature = struct.unpack_from("<I", sector0, 440)[0]
    entries: dict[int, MbrEntry] = {}
    extended: MbrEntry | None = None
    for slot, (status, ptype, start, count) in enumerate(_mbr_slots(sector0)):
        if ptype == 0 or count == 0:
            continue
        role = "extended" if ptype in EXTENDED_TYPES else "primary"
        entry = MbrEntry(slot + 1, status == 0x80, ptype, start, count, role, (0, slot))
        entries[slot + 1] = entry
        if role == "extended":
            extended = entry
    if extended is not None:
        for entry in _logical_entries(fd, sector_size, extended.first):
            entries[entry.number] = entry
    return MbrFields(signature, entries)


def _logical_entries(fd: int, sector_size: int, ext_start: int) -> list[MbrEntry]:
    result: list[MbrEntry] = []
    ebr = ext_start
    seen: set[int] = set()
    while ebr not in seen and len(result) < MAX_LOGICAL:
        seen.add(ebr)
        sector = read_at(fd, ebr * sector_size, sector_size)
        if sector[510:512] != MBR_MAGIC:
            break
        slots = _mbr_slots(sector)
        status, ptype, start, count = slots[0]
        if ptype != 0 and count != 0:
            result.append(
                MbrEntry(
                    number=5 + len(result),
                    boot=status == 0x80,
                    type=ptype,
                    first=ebr + start,
                    sectors=count,
                    role="logical",
                    location=(ebr, 0),
                )
            )
        _, next_type, next_start, _ = slots[1]
        if next_type not in EXTENDED_TYPES or next_start == 0:
            break
        ebr = ext_start + next_start
    return result


def patch_mbr(
    fd: int, sector_size: int, signature: int, wanted: dict[int, tuple[bool, int]]
) -> None:
    """Give the table libparted wrote the original's signature, slot order, boot flags and
    type bytes. ``wanted`` maps partition number to (boot, type). libparted numbers primary
    partitions 1, 2, ... in the order they were added; they are moved to their slots here."""
    sector0 = bytearray(read_at(fd, 0, sector_size))
    struct.pack_into("<I", sector0, 440, signature)
    slots = [bytes(sector0[446 + 16 * i : 462 + 16 * i]) for i in range(4)]
    made = [s for s in slots if s[4] != 0]
    primary_numbers = sorted(n for n in wanted if n <= 4)
    if len(made) != len(primary_numbers):
        raise SourceError(
            f"libparted wrote {len(made)} primary entries where {len(primary_numbers)} were asked."
        )
    new_slots = [bytes(16)] * 4
    for raw, number in zip(made, primary_numbers, strict=True):
        boot, ptype = wanted[number]
        slot = bytearray(raw)
        slot[0] = 0x80 if boot else 0
        slot[4] = ptype
        new_slots[number - 1] = bytes(slot)
    for i, raw in enumerate(new_slots):
        sector0[446 + 16 * i : 462 + 16 * i] = raw
    os.pwrite(fd, bytes(sector0), 0)
    ext_start = next(
        (struct.unpack_from("<I", raw, 8)[0] for raw in new_slots if raw[4] in EXTENDED_TYPES),
        None,
    )
    if ext_start is None:
        return
    for entry in _logical_entries(fd, sector_size, ext_start):
        if entry.number not in wanted:
            raise SourceError(f"libparted wrote a logical partition {entry.number} not asked for.")
        boot, ptype = wanted[entry.number]
        sector_no, index = entry.location
        ebr = bytearray(read_at(fd, sector_no * sector_size, sector_size))
        ebr[446 + 16 * index] = 0x80 if boot else 0
        ebr[446 + 16 * index + 4] = ptype
        os.pwrite(fd, bytes(ebr), sector_no * sector_size)


def gpt_entries_end(fd: int, sector_size: int) -> int:
    """Byte offset just past the primary GPT's entry array (where the gap begins)."""
    header = _parse_gpt_header(read_at(fd, sector_size, sector_size))
    if header is None:
        raise SourceError("The GPT just written has no valid primary header.")
    entries_lba, count, size = header[4], header[5], header[7]
    return entries_lba * sector_size + -(-(count * size) // sector_size) * sector_size


_FS_BOOT_SECTOR_MARKS = ((3, b"NTFS    "), (3, b"EXFAT   "), (54, b"FAT1"), (82, b"FAT32   "))


def detect(fd: int, sector_size: int, device_size: int) -> str:
    """``gpt``, ``msdos`` or "" (no partition table: empty, or a filesystem on the whole
    device, whose boot sector also ends in 55 AA)."""
    if device_size < 2 * sector_size:
        return ""
    sector0 = read_at(fd, 0, sector_size)
    slots = _mbr_slots(sector0) if sector0[510:512] == MBR_MAGIC else []
    if any(ptype == PROTECTIVE_TYPE for _, ptype, _, _ in slots):
        return "gpt"
    if _parse_gpt_header(read_at(fd, sector_size, sector_size)) is not None:
        return "gpt"
    if not slots or any(sector0[at : at + len(mark)] == mark for at, mark in _FS_BOOT_SECTOR_MARKS):
        return ""
    sectors = device_size // sector_size
    used = [(start, count) for _, ptype, start, count in slots if ptype and count]
    if not used or any(status not in (0, 0x80) for status, _, _, _ in slots):
        return ""
    if any(start < 1 or start + count > sectors for start, count in used):
        return ""
    return "msdos"
