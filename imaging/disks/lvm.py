"""An LVM physical volume imaged by the blocks its logical volumes' filesystems use.

A PV is its metadata area (before ``pe_start``, and anything after the last extent, where a
second metadata copy may be), then extents. LVM's own tools read its metadata with no
device-mapper (``pvs`` and ``lvs`` only read the text the PV holds), so the PV's layout comes
from them: which extents belong to which logical volume. A logical volume that is one linear
run of extents on this PV holds its filesystem at a known byte range of the PV; a read-only
loop device over that range is the filesystem, and partclone maps its used blocks (checked by
the filesystem's own metadata, as for a partition). The PV's image is then the metadata area,
the used blocks of each such filesystem, and every extent of any other logical volume
(several segments, thin, RAID, snapshots, LUKS inside: read whole). Free extents are not read.

The image is a partition image like any other: a restore writes the same bytes back where
they were, so the PV, VG and LV ids and the metadata are the original's (``--new-ids`` then
gives the PV and VG new UUIDs: :mod:`imaging.disks.identity`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

from imaging.disks import crosscheck, filesystems
from imaging.errors import HourglassError, ToolFailed
from imaging.image.usedmap import UsedMap, merge_ranges
from imaging.process import run
from imaging.units import count

LVM_ENV = {"LVM_SUPPRESS_FD_WARNINGS": "1"}


@dataclass(frozen=True)
class Segment:
    """A run of extents of the PV: ``lv`` ("" when free) from extent ``start`` on."""

    start: int
    count: int
    lv: str
    segtype: str


@dataclass(frozen=True)
class PvLayout:
    vg: str
    pe_start: int
    extent_size: int
    extents: int
    segments: tuple[Segment, ...]
    lv_segments: dict[str, int]
    """How many segments each logical volume has (on every PV of the VG)."""

    def lv_runs(self) -> set[tuple[str, int, int]]:
        """(LV, first extent, extents) of each run of extents an LV holds."""
        return {(seg.lv, seg.start, seg.count) for seg in self.segments if seg.lv}

    @property
    def data_end(self) -> int:
        return self.pe_start + self.extents * self.extent_size


def _lvm(*argv: str, device: str) -> dict[str, list[dict[str, str]]]:
    """The JSON report of an LVM command over ``device`` alone (no other disk is scanned:
    a copy of the same PV elsewhere would make LVM complain of duplicates)."""
    result = run(
        [
            argv[0],
            "--devices",
            device,
            "--readonly",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            *argv[1:],
        ],
        env={**os.environ, **LVM_ENV},
    )
    report = json.loads(result.stdout.decode())["report"]
    merged: dict[str, list[dict[str, str]]] = {}
    for part in report:
        for key, rows in part.items():
            merged.setdefault(key, []).extend(rows)
    return merged


def pv_layout(device: str) -> PvLayout:
    """The layout of the PV on ``device``, from ``pvs`` and ``lvs``."""
    pv = _lvm(
        "pvs",
        "--segments",
        "-o",
        "vg_name,pe_start,vg_extent_size,pv_pe_count,pvseg_start,pvseg_size,lv_name,segtype",
        device=device,
    ).get("pvseg", [])
    if not pv:
        raise ToolFailed(f"LVM reports no physical volume on {device}.")
    first = pv[0]
    vg = first["vg_name"]
    segments = tuple(
        Segment(int(r["pvseg_start"]), int(r["pvseg_size"]), r.get("lv_name", ""), r["segtype"])
        for r in pv
    )
    counts: dict[str, int] = {}
    if vg:
        for row in _lvm("lvs", "-o", "lv_name,seg_count", vg, device=device)["lv"]:
            counts[row["lv_name"]] = int(row["seg_count"])
    return PvLayout(
        vg=vg,
        pe_start=int(first["pe_start"]),
        extent_size=int(first["vg_extent_size"] or 0),
        extents=int(first["pv_pe_count"]),
        segments=segments,
        lv_segments=counts,
    )


@contextlib.contextmanager
def range_device(
    path: str, offset: int = 0, size: int | None = None, *, read_only: bool = True
) -> Iterator[str]:
    """A loop device over ``size`` bytes of ``path`` from ``offset`` (to its end without
    ``size``): one logical volume's extents, where there is no device-mapper."""
    argv = ["losetup", "--find", "--show", "--offset", str(offset)]
    if read_only:
        argv.append("--read-only")
    if size is not None:
        argv += ["--sizelimit", str(size)]
    loop = run([*argv, path]).stdout.decode().strip()
    try:
        yield loop
    finally:
        run(["losetup", "--detach", loop], check=False)


LVM_QUIET = ["--config", "backup { backup = 0 archive = 0 }", "--driverloaded", "n"]
"""What an LVM command that writes metadata is given: no backup or archive of a restored
VG in this machine's /etc/lvm, and nothing activated (there may be no device-mapper)."""


def lvm_change(*argv: str, device: str) -> str:
    """An LVM command that changes the metadata of the PV on ``device`` alone (no other
    disk is scanned); its output."""
    result = run(
        [argv[0], "--devices", device, *LVM_QUIET, *argv[1:]], env={**os.environ, **LVM_ENV}
    )
    return result.stdout.decode(errors="replace")


@dataclass
class LvImage:
    name: str
    method: str  # partclone.ext4, raw
    used: int
    size: int
    note: str = ""


def used_map(device: str, size: int, block_size: int) -> tuple[UsedMap, list[LvImage]]:
    """The used map of the PV on ``device`` (``size`` bytes) and what was found per LV."""
    layout = pv_layout(device)
    ranges: list[tuple[int, int]] = [(0, layout.pe_start)]
    if layout.data_end < size:
        ranges.append((layout.data_end, size - layout.data_end))
    found = []
    for seg in layout.segments:
        if not seg.lv:
            continue
        start = layout.pe_start + seg.start * layout.extent_size
        length = seg.count * layout.extent_size
        whole = LvImage(seg.lv, "raw", length, length)
        if seg.segtype != "linear" or layout.lv_segments.get(seg.lv, 0) != 1:
            segments = count(layout.lv_segments.get(seg.lv, 0), "segment")
            whole.note = f"{seg.segtype}, {segments}: read whole"
            ranges.append((start, length))
            found.append(whole)
            continue
        mapped = _filesystem_map(device, start, length, block_size, seg.lv)
        if mapped is None:
            ranges.append((start, length))
            found.append(whole)
            continue
        lv_map, image = mapped
        ranges.extend((start + s, n) for s, n in lv_map.ranges())
        found.append(image)
    used = UsedMap.from_ranges(size, block_size, merge_ranges(sorted(ranges)))
    return used, found


def _filesystem_map(
    device: str, start: int, length: int, block_size: int, name: str
) -> tuple[UsedMap, LvImage] | None:
    """partclone's map of the filesystem in one LV, checked; None: read it whole."""
    with range_device(device, start, length) as lv:
        fstype = filesystems.probe(lv).fstype
        if fstype not in filesystems.PARTCLONE:
            return None
        try:
            with crosscheck.Opinion(lv, fstype) as opinion:
                used = filesystems.used_map(lv, fstype, length, block_size)
                used, warnings = opinion.checked(used)
        except HourglassError:
            return None
    return used, LvImage(name, f"partclone.{fstype}", used.used_bytes, length, "; ".join(warnings))
