"""An LVM physical volume restored into a smaller partition: its logical volumes packed at
the start of the PV, the largest shrunk as far as the room demands.

As for a filesystem (:mod:`imaging.disks.shrink`), the snapshot is never changed and the
target is not written until the new PV is known to fit: the PV's image is restored into a
sparse scratch file the size of the original partition, and there

1. each logical volume's filesystem is reached through a loop device over its extents (this
   kernel may have no device-mapper, and LVM's tools need none to read and write metadata);
2. the room the smaller partition lacks is taken from the logical volumes, largest first,
   each down to what its data needs (ext2/3/4 by ``resize2fs -P``, otherwise its used bytes
   with the same margin as a partition); free extents go first, and an LV that holds no
   filesystem Hourglass can shrink keeps its size;
3. ext2/3/4, NTFS and btrfs shrink in the scratch copy with their own tools; an xfs LV is
   marked to be made anew (it cannot shrink);
4. LVM's own tools change the metadata: ``lvreduce`` for each LV shrunk (``--driverloaded
   n``: nothing is activated), the first extent of each LV's one segment set in the VG's
   backup text and written back with ``vgcfgrestore`` (no tool moves extents without
   device-mapper's mirror target: ``pvmove`` needs it), then ``pvresize
   --setphysicalvolumesize`` to the new size, which refuses a layout that would not fit.

The PV then keeps its PV, VG and LV ids, names, tags and flags. What is written to the
target partition: the PV's metadata area as LVM left it in the scratch copy, and each LV's
used blocks (partclone's map of its filesystem, shrunk or not; an LV with no filesystem
partclone maps, whole) at its new place; then each xfs LV is made anew with its UUID and
label and its files copied from the scratch copy with ``cp -a``. Every LV's filesystem is
checked with its own tool on the target, and LVM's report of the written PV must match the
plan.

Refused with a reason (the partition is then not shrunk): a VG on several PVs, an LV of more
than one segment or not linear (thin pools, RAID, snapshots), a PV with a metadata copy at
its end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from imaging.disks import filesystems
from imaging.disks.grow import GROW_ROOT
from imaging.disks.lvm import PvLayout, lvm_change, pv_layout, range_device
from imaging.disks.resize import shrink_needs
from imaging.disks.shrink import (
    Scratch,
    _minimum,
    _shrink,
    check_shrunk,
    copy_ranges,
    restore_to_scratch,
)
from imaging.errors import HourglassError, TargetTooSmall, ToolFailed
from imaging.image.restore import RestoreOptions, RestoreResult
from imaging.mounts.drivers import Mode
from imaging.mounts.mount import mount, unmount
from imaging.process import run
from imaging.progress import ProgressCallback, no_progress
from imaging.repository.store import Repository, Snapshot
from imaging.units import decimal_size

# Filesystems an LV can shrink in (the scratch copy, with their own tool); xfs is made anew.
IN_PLACE = {"ext2", "ext3", "ext4", "ntfs", "btrfs"}


@dataclass
class Volume:
    """One logical volume: where it was and where it goes in the PV (bytes), and how."""

    name: str
    fstype: str
    old_offset: int
    old_extents: int
    new_extents: int = 0
    new_offset: int = 0
    least: int = 0  # extents its data needs; 0: it cannot shrink
    uuid: str = ""
    label: str = ""
    how: str = ""  # what happened, for the result
    ranges: list[tuple[int, int]] = field(default_factory=list)  # within the LV, to copy

    @property
    def shrinks(self) -> bool:
        return self.new_extents < self.old_extents

    @property
    def recreated(self) -> bool:
        return self.shrinks and self.fstype == "xfs"


@dataclass
class ShrunkPv:
    """A PV made smaller in a scratch file: what to copy into the new partition."""

    path: str
    vg: str
    pe_start: int
    extent_size: int
    size: int  # the new partition's bytes
    volumes: list[Volume]

    def remove(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)

    def copies(self, offset: int) -> list[tuple[int, int, int]]:
        """(from, to, length) in bytes: the metadata area, each LV's blocks to keep; ``to``
        on the target, whose partition starts at ``offset``."""
        out = [(0, offset, self.pe_start)]
        for v in self.volumes:
            if v.recreated:
                continue
            out += [(v.old_offset + s, offset + v.new_offset + s, n) for s, n in v.ranges]
        return out

    def planned(self) -> set[tuple[str, int, int]]:
        """(LV, first extent, extents) of each LV in the new PV."""
        es = self.extent_size
        return {(v.name, (v.new_offset - self.pe_start) // es, v.new_extents) for v in self.volumes}

    def summary(self, before: int) -> str:
        parts = []
        for v in self.volumes:
            if v.shrinks:
                old = decimal_size(v.old_extents * self.extent_size)
                new = decimal_size(v.new_extents * self.extent_size)
                parts.append(f"{v.name} ({v.fstype}) {old} to {new}, {v.how}")
            elif v.new_offset != v.old_offset:
                parts.append(f"{v.name} moved, unchanged")
        what = "; ".join(parts) or "its logical volumes unchanged"
        return (
            f"LVM physical volume (VG {self.vg}) from {decimal_size(before)} to "
            f"{decimal_size(self.size)}: {what}"
        )


def _refuse(why: str) -> TargetTooSmall:
    return TargetTooSmall(
        f"The LVM physical volume cannot be made smaller: {why}.",
        "Choose a disk at least the size of the original. Nothing was written to it.",
    )


def _check_shape(device: str, layout: PvLayout) -> None:
    report = json.loads(
        lvm_change("vgs", "--reportformat", "json", "-o", "pv_count", layout.vg, device=device)
    )["report"][0]["vg"]
    if not report or int(report[0]["pv_count"]) != 1:
        raise _refuse(f"its volume group {layout.vg} lies on more than one physical volume")
    for seg in layout.segments:
        if seg.lv and (seg.segtype != "linear" or layout.lv_segments.get(seg.lv, 0) != 1):
            raise _refuse(
                f"logical volume {seg.lv} is {seg.segtype} in "
                f"{layout.lv_segments.get(seg.lv, 0)} segments, which Hourglass does not move"
            )


def _volumes(device: str, layout: PvLayout) -> list[Volume]:
    """Each LV, in the order of its extents, with its filesystem's type, UUID and label."""
    es = layout.extent_size
    volumes = []
    for seg in layout.segments:
        if not seg.lv:
            continue
        offset = layout.pe_start + seg.start * es
        v = Volume(seg.lv, "", offset, seg.count)
        with range_device(device, offset, seg.count * es) as lv:
            info = filesystems.probe(lv)
        v.fstype, v.uuid, v.label = info.fstype, info.uuid, info.label
        volumes.append(v)
    return volumes


def _least(device: str, v: Volume, extent_size: int) -> int:
    """The extents ``v``'s data needs (0: it cannot shrink), asked of its filesystem's tools
    (e2fsck -f and resize2fs -P for ext: only for the LVs that must shrink)."""
    with range_device(device, v.old_offset, v.old_extents * extent_size, read_only=False) as lv:
        needed = _needs(lv, v.fstype)
    return 0 if needed is None else min(v.old_extents, -(-needed // extent_size))


def _needs(lv: str, fstype: str) -> int | None:
    """The bytes the filesystem on ``lv`` needs to hold its data: its used bytes with the
    margin and floor a partition gets, and never less than its own tool's minimum; None:
    it cannot shrink."""
    if fstype not in IN_PLACE and fstype != "xfs":
        return None
    used = filesystems.used_bytes(lv, fstype)
    if used is None:
        return None
    return max(_minimum(lv, fstype) or 0, shrink_needs(fstype, used))


def _allot(
    volumes: list[Volume],
    extents: int,
    layout: PvLayout,
    new_size: int,
    target: str,
    least: Callable[[Volume], int],
) -> None:
    """Give each volume its extents in the new PV of ``extents``, largest shrinking first
    (``least`` says what it needs, asked only of those that must shrink); TargetTooSmall
    naming what the data needs when even then they do not fit."""
    for v in volumes:
        v.new_extents = v.old_extents
    lacking = sum(v.old_extents for v in volumes) - extents
    for v in sorted(volumes, key=lambda v: -v.old_extents):
        if lacking <= 0:
            break
        v.least = least(v)
        if v.least:
            give = min(v.old_extents - v.least, lacking)
            v.new_extents -= give
            lacking -= give
    if lacking > 0:
        es = layout.extent_size
        total = sum(v.least or v.old_extents for v in volumes)
        needs = layout.pe_start + total * es
        raise TargetTooSmall(
            f"The LVM physical volume cannot shrink to {decimal_size(new_size)} on {target}: "
            f"its logical volumes need at least {decimal_size(total * es)} ("
            + ", ".join(
                f"{v.name} {decimal_size((v.least or v.old_extents) * es)}" for v in volumes
            )
            + f"), a partition of {decimal_size(needs)}.",
            f"Choose a disk at least {decimal_size(needs - new_size)} larger. "
            "Nothing was written to it.",
        )
    at = 0
    for v in volumes:
        v.new_offset = layout.pe_start + at * layout.extent_size
        at += v.new_extents


def _set_first_extents(text: str, firsts: dict[str, int]) -> str:
    """The VG backup ``text`` with the one segment of each LV in ``firsts`` starting at
    that extent of pv0. LVM's backup format puts one block on a line: ``VG { ...
    logical_volumes { NAME { ... segment1 { ... stripes = [ "pv0", N ] } } } }``."""
    lines = text.split("\n")
    blocks: list[str] = []  # the names of the blocks the line is in, outermost first
    done: set[str] = set()
    for i, line in enumerate(lines):
        bare = re.sub(r'"[^"]*"', '""', line).split("#", 1)[0]
        lv = blocks[2] if len(blocks) > 2 and blocks[1] == "logical_volumes" else ""
        if lv in firsts and lv not in done and len(blocks) > 3:
            m = re.search(r'"pv0"\s*,\s*(\d+)', line)
            if m:
                lines[i] = line[: m.start(1)] + str(firsts[lv]) + line[m.end(1) :]
                done.add(lv)
        opened = re.fullmatch(r"\s*([\w.+-]+)\s*\{\s*", bare)
        if opened:
            blocks.append(opened.group(1))
        elif "{" in bare:
            raise ToolFailed(f"Hourglass cannot read this line of the VG's metadata: {line!r}")
        for _ in range(bare.count("}")):
            if blocks:
                blocks.pop()
    missing = set(firsts) - done
    if missing:
        raise ToolFailed(f"The VG's metadata names no segment of {', '.join(sorted(missing))}.")
    return "\n".join(lines)


def shrink_pv_in_scratch(
    repo: Repository,
    snapshot: Snapshot,
    image: str,
    new_size: int,
    *,
    scratch: Scratch,
    target: str,
    progress: ProgressCallback = no_progress,
    options: RestoreOptions | None = None,
    result: RestoreResult | None = None,
) -> ShrunkPv:
    """Restore the PV of ``image`` into a sparse scratch file and make it a PV of
    ``new_size`` bytes there; :class:`TargetTooSmall`, naming ``target``, when its LVs'
    data needs more."""
    path = restore_to_scratch(
        repo,
        snapshot,
        image,
        new_size,
        scratch=scratch,
        progress=progress,
        options=options,
        result=result,
    )
    try:
        with range_device(path, read_only=False) as device:
            shrunk = _shrink_pv(device, path, new_size, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return shrunk


def _shrink_pv(device: str, path: str, new_size: int, target: str) -> ShrunkPv:
    """Steps 1 to 4 on the scratch copy's loop ``device``."""
    layout = pv_layout(device)
    es = layout.extent_size
    if not layout.vg or not es:
        raise _refuse("it belongs to no volume group")
    copies = lvm_change("pvs", "-o", "pv_mda_count", "--noheadings", device, device=device)
    if copies.strip() != "1":
        raise _refuse(f"it keeps {copies.strip()} copies of its metadata, not one at its start")
    _check_shape(device, layout)
    volumes = _volumes(device, layout)
    extents = (new_size - layout.pe_start) // es
    _allot(volumes, extents, layout, new_size, target, lambda v: _least(device, v, es))
    for v in volumes:
        old, new = v.old_extents * es, v.new_extents * es
        with range_device(device, v.old_offset, old, read_only=False) as lv:
            if v.shrinks and v.fstype in IN_PLACE:
                v.how = f"shrunk with {_shrink(lv, v.fstype, new)}"
            elif v.recreated:
                v.how = "made anew (same UUID and label) and its files copied"
            if v.recreated:
                continue
            v.ranges = [(0, new)]  # with no map of its used blocks: all of it
            if v.fstype in filesystems.PARTCLONE:
                with contextlib.suppress(HourglassError):
                    used = filesystems.used_map(lv, v.fstype, new, 2**20, checked=v.shrinks)
                    v.ranges = list(used.ranges())
    for v in volumes:
        if v.shrinks:
            lvm_change(
                "lvreduce", "-f", "-l", str(v.new_extents), f"{layout.vg}/{v.name}", device=device
            )
    with tempfile.TemporaryDirectory(prefix="hourglass-lvm-") as tmp:
        backup = os.path.join(tmp, "vg.cfg")
        lvm_change("vgcfgbackup", "-f", backup, layout.vg, device=device)
        with open(backup) as f:
            text = f.read()
        firsts = {v.name: (v.new_offset - layout.pe_start) // es for v in volumes}
        with open(backup, "w") as f:
            f.write(_set_first_extents(text, firsts))
        lvm_change("vgcfgrestore", "-f", backup, layout.vg, device=device)
    lvm_change("pvresize", "-y", "--setphysicalvolumesize", f"{new_size}b", device, device=device)
    shrunk = ShrunkPv(path, layout.vg, layout.pe_start, es, new_size, volumes)
    after = pv_layout(device)
    if after.lv_runs() != shrunk.planned() or after.extents > extents:
        raise ToolFailed(
            f"LVM's metadata of the smaller PV is not the plan: {sorted(after.lv_runs())} "
            f"against {sorted(shrunk.planned())}."
        )
    return shrunk


def write_pv(
    shrunk: ShrunkPv,
    disk: str,
    offset: int,
    *,
    verify: bool = True,
    progress: ProgressCallback = no_progress,
    item: str = "",
) -> int:
    """Copy the smaller PV's metadata area and its LVs' blocks to ``disk``, its partition at
    ``offset``; with ``verify`` read them back. Returns the bytes written."""
    copies = shrunk.copies(offset)
    return copy_ranges(
        shrunk.path, disk, copies, verify=verify, what="PV", progress=progress, item=item
    )


def finish_pv(shrunk: ShrunkPv, node: str) -> None:
    """On the written partition ``node``: make each xfs LV anew and copy its files from the
    scratch copy, check every LV's filesystem, and LVM's report against the plan."""
    es = shrunk.extent_size
    written = pv_layout(node).lv_runs()
    if written != shrunk.planned():
        raise HourglassError(
            f"LVM reads a different layout from the PV written on {node}: {sorted(written)}."
        )
    for v in shrunk.volumes:
        if v.recreated:
            _recreate_xfs(shrunk, v, node)
    for v in shrunk.volumes:
        if v.fstype in IN_PLACE or v.fstype == "xfs":
            with range_device(node, v.new_offset, v.new_extents * es) as lv:
                check_shrunk(lv, v.fstype)


def _recreate_xfs(shrunk: ShrunkPv, v: Volume, node: str) -> None:
    es = shrunk.extent_size
    with (
        range_device(shrunk.path, v.old_offset, v.old_extents * es, read_only=False) as source,
        range_device(node, v.new_offset, v.new_extents * es, read_only=False) as target,
    ):
        argv = ["mkfs.xfs", "-q", "-f"]
        if v.uuid:
            argv += ["-m", f"uuid={v.uuid}"]
        if v.label:
            argv += ["-L", v.label]
        run([*argv, target])
        source_dir = str(GROW_ROOT / f"xfs-from-{os.path.basename(source)}")
        target_dir = str(GROW_ROOT / f"xfs-{os.path.basename(target)}")
        mount(source, "xfs", source_dir, Mode.READ_ONLY)
        try:
            mount(target, "xfs", target_dir, Mode.READ_WRITE)
            try:
                run(["cp", "-a", "--sparse=auto", "--", f"{source_dir}/.", f"{target_dir}/"])
            finally:
                unmount(target_dir, remove=True)
        finally:
            unmount(source_dir, remove=True)
