"""How disks, partitions, snapshots, sizes and times read on screen, in the current language.

The engine's own ``describe()`` methods are English; the app builds its sentences from the
same facts here, through gettext.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

from imaging.units import decimal_size, human_duration, human_size
from recovery_ui.i18n import N_, _, ngettext

if TYPE_CHECKING:
    from imaging.jobs.disks import Disk, FoundRepository, Partition
    from imaging.jobs.files import JournalGap
    from imaging.repository.records import ImageRecord, Snapshot

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

__all__ = ["decimal_size", "human_duration", "human_size"]


def when(moment: datetime) -> str:
    """A time to the second, in the machine's local zone (what people type back)."""
    local = moment.astimezone() if moment.tzinfo else moment
    return local.strftime(TIME_FORMAT)


def moment(ns: int) -> datetime:
    """A time of the file journal (nanoseconds since the epoch), in the local zone."""
    return datetime.fromtimestamp(ns / 1e9).astimezone()


GAP_REASONS = {
    "not running": N_("the agent was not running"),
    "overflow": N_("too many changes at once (the event queue overflowed)"),
    "unreachable": N_("the repository could not be reached"),
    "unreadable": N_("a file could not be read"),
}


GAP_CAUSES = {
    "not running": N_("agent stopped"),
    "overflow": N_("overflow"),
    "unreachable": N_("no repository"),
    "unreadable": N_("unreadable"),
}


def gap_cause(gap: JournalGap) -> str:
    """Why the agent did not watch, in a word or two (a cell of a table)."""
    known = GAP_CAUSES.get(gap.reason)
    return _(known) if known else gap.reason


def gap_reason(gap: JournalGap) -> str:
    """Why the agent did not watch: in the app's language where the app knows the reason."""
    known = GAP_REASONS.get(gap.reason)
    return _(known) if known else gap.reason


def gap_line(gap: JournalGap) -> str:
    """``Not watched from .. to ..: reason`` (an instant: ``At ..: reason``)."""
    reason = gap_reason(gap)
    if gap.detail and gap.reason == "unreadable":
        reason += f" ({gap.detail})"  # which file
    if gap.to_ns // 10**9 <= gap.from_ns // 10**9:
        return _("At {time}: {reason}").format(time=when(moment(gap.to_ns)), reason=reason)
    return _("Not watched from {start} to {end}: {reason}").format(
        start=when(moment(gap.from_ns)), end=when(moment(gap.to_ns)), reason=reason
    )


def rate(bytes_per_second: float) -> str:
    return _("{size}/s").format(size=decimal_size(bytes_per_second))


def duration(seconds: float | None) -> str:
    return human_duration(seconds) if seconds is not None else "--:--"


def name_order(name: str) -> tuple[list[int | str], str]:
    """Sort key for file names as a file manager lists them: numbers by value (``d2``
    before ``d10``), letters without regard to case; names equal that way keep a fixed
    order. Splitting on runs of digits puts text at even places and numbers at odd ones,
    so two keys never compare a number with text."""
    pieces = re.split(r"(\d+)", name.casefold())
    return [int(piece) if index % 2 else piece for index, piece in enumerate(pieces)], name


def time_taken(seconds: float) -> str:
    """``Time taken: 1:05``; a backup that took less than a second says so (not "0:00")."""
    if seconds < 1:
        return _("Time taken: under a second")
    return _("Time taken: {time}").format(time=duration(seconds))


def found_repository(found: FoundRepository, disk: Disk | None) -> str:
    """``/hourglass-backups  (WD Elements 25A2 (serial ...), 2.0 TB, partition 1)``: a
    repository found on a drive, as Home and the repository chooser list it."""
    where = disk_title(disk) if disk else found.disk
    if found.partition is not None:
        where += ", " + _("partition {number}").format(number=found.partition)
    return f"{found.folder}  ({where})"


def disk_title(disk: Disk) -> str:
    """Model (serial), size: how a person recognises a disk."""
    model = disk.model or _("Unknown disk")
    serial = _(" (serial {serial})").format(serial=disk.serial) if disk.serial else ""
    return f"{model}{serial}, {decimal_size(disk.size)}"


def disk_marks(disk: Disk) -> list[str]:
    """Short facts shown beside a disk's name."""
    marks = []
    if disk.transport == "usb" or disk.removable:
        marks.append(_("USB") if disk.transport == "usb" else _("removable"))
    if disk.is_boot_disk:
        marks.append(_("started from"))
    if disk.holds_repository:
        marks.append(_("backup drive"))
    if not disk.partitions:
        marks.append(_("no partitions") if disk.table else _("blank"))
    return marks


def partition_name(partition: Partition) -> str:
    return partition.label or partition.name


def disk_option(disk: Disk) -> str:
    """Two lines for a list of disks: the device and what it is marked as, then its title."""
    marks = disk_marks(disk)
    first = disk.device + (f"  [{', '.join(marks)}]" if marks else "")
    return f"{first}\n  {disk_title(disk)}"


def partition_item(p: Partition) -> str:
    """Short: ``3 ntfs "Windows" 498.0 GB, 143.0 GB used``."""
    cells = [str(p.number), p.fstype or p.type_name or _("no filesystem")]
    name = partition_name(p)
    if name:
        cells.append(f'"{name}"')
    cells.append(decimal_size(p.size))
    item = " ".join(cells)
    if p.used is not None:
        item += ", " + _("{size} used").format(size=human_size(p.used))
    return item


def partition_line(partition: Partition) -> str:
    """``2  ext4 "root"  96.5 MB  (21.1 MB used)``."""
    cells = [_("partition {number}").format(number=partition.number)]
    cells.append(partition.fstype or _("no filesystem"))
    name = partition_name(partition)
    if name:
        cells.append(f'"{name}"')
    cells.append(decimal_size(partition.size))
    if partition.used is not None:
        cells.append(_("{size} used").format(size=human_size(partition.used)))
    if partition.mountpoint:
        cells.append(_("in use at {path}").format(path=partition.mountpoint))
    return ", ".join(cells)


def erase_lines(disk: Disk) -> list[str]:
    """What a destructive confirmation shows: the disk, then everything on it."""
    lines = [f"{disk.device}: {disk_title(disk)}"]
    if disk.transport:
        lines.append(_("Connected by: {transport}").format(transport=disk.transport))
    if not disk.partitions:
        lines.append(_("No partitions: nothing recognisable is on it."))
    lines.extend("  " + partition_line(p) for p in disk.partitions)
    return lines


def snapshot_source(snapshot: Snapshot, *, serial: bool = True) -> str:
    """The disk a snapshot was taken of: model and serial as recorded, or its source path."""
    disk = snapshot.record.disk
    model = (disk and disk.model) or ""
    number = ((disk and disk.serial) or "") if serial else ""
    if model and number:
        return f"{model} ({number})"
    return model or snapshot.source


def snapshot_line(snapshot: Snapshot) -> str:
    parts = ngettext("{count} partition", "{count} partitions", _partitions(snapshot)).format(
        count=_partitions(snapshot)
    )
    size = decimal_size(snapshot.size)
    return f"{when(snapshot.time)}  {snapshot_source(snapshot)}  {size}, {parts}"


def _partitions(snapshot: Snapshot) -> int:
    return sum(1 for image in snapshot.images if image.name != "head")


def image_name(name: str) -> str:
    """An image of a snapshot as a person calls it: ``p2`` is partition 2."""
    if name.startswith("p") and name[1:].isdigit():
        return _("partition {number}").format(number=name[1:])
    if name == "head":
        return _("start of the disk (boot code and table)")
    if name == "data":
        return _("filesystem")
    return name


def image_line(image: ImageRecord) -> str:
    """One partition image of a snapshot."""
    number = image.number
    what = _("partition {number}").format(number=number) if number is not None else _("filesystem")
    cells = [what, image.fstype or _("no filesystem")]
    if image.label:
        cells.append(f'"{image.label}"')
    cells.append(decimal_size(image.size))
    if image.used is not None:
        cells.append(_("{size} used").format(size=human_size(image.used)))
    return ", ".join(cells)


def deduplication(data_bytes: int, unique_bytes: int) -> str:
    """How much smaller deduplication made ``data_bytes``: "1.8x less", "6 % less", or that
    no block repeats. A factor is only shown from 1.1 up: "1.0x less" read as a saving where
    there was none or almost none."""
    size = decimal_size(unique_bytes)
    if not data_bytes or unique_bytes >= data_bytes:
        return _("Different data (after deduplication): {size}, no block repeats").format(size=size)
    ratio = data_bytes / unique_bytes
    if ratio < 1.1:  # below 10 % a percentage says it; a factor would round to 1.0
        saved = max(0.01, 1 - unique_bytes / data_bytes)
        return _("Different data (after deduplication): {size}, {saved:.0%} less").format(
            size=size, saved=saved
        )
    return _("Different data (after deduplication): {size}, {ratio:.1f}x less").format(
        size=size, ratio=ratio
    )
