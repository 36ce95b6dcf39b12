"""`hourglass disks`, and restoring whole-disk snapshots (`hourglass restore` of kind disk)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from imaging.cli.main import print_json
from imaging.disks.model import Disk
from imaging.repository.store import Repository, Snapshot
from imaging.units import decimal_size, human_size


def disk_row(disk: Disk) -> str:
    marks = []
    if disk.is_boot_disk:
        marks.append("BOOT DISK")
    marks.extend(f"repository {path}" for path in disk.repositories)
    facts = [disk.transport or "?", disk.table or "no table"]
    if disk.removable:
        facts.append("removable")
    if disk.by_id:
        facts.append(disk.by_id)
    line = f"{disk.device}  {disk.title()}  ({', '.join(facts)})"
    return line + (f"  [{'; '.join(marks)}]" if marks else "")


def partition_rows(disk: Disk) -> list[str]:
    rows = []
    for p in disk.partitions:
        cells = [
            f"{p.number:>3}",
            f"{p.device or '-':<16}",
            f"{decimal_size(p.size):>9}",
            f"{(p.fstype or '-'):<11}",
            f"{(p.label or p.name or '-'):<16}",
            f"{(human_size(p.used) + ' used') if p.used is not None else '':<16}",
            p.type_name or p.type,
        ]
        if p.mountpoint:
            cells.append(f"mounted {'rw' if p.mounted_rw else 'ro'} at {p.mountpoint}")
        rows.append("  ".join(cells).rstrip())
    return rows


def cmd_disks(args: argparse.Namespace) -> int:
    from imaging.disks.discover import list_disks, udev_running

    disks = list_disks(used=not args.no_used)
    if args.json:
        print_json(
            [dataclasses.asdict(d) | {"holds_repository": d.holds_repository} for d in disks]
        )
        return 0
    if not disks:
        print("No disks found.")
        return 0
    for disk in disks:
        print(disk_row(disk))
        for row in partition_rows(disk):
            print(f"  {row}")
    if not udev_running():
        print("(udev is not running: facts come from /sys, blkid and the partition tables)")
    return 0


# --- restore of kind "disk" -----------------------------------------------------------------


def describe_snapshot(snapshot: Snapshot, partition: int | None) -> str:
    disk = snapshot.record.disk
    model = (disk and disk.model) or "disk"
    serial = f" ({disk.serial})" if disk and disk.serial else ""
    when = snapshot.time.strftime("%Y-%m-%d %H:%M:%S")
    lines = [
        f"snapshot {snapshot.id[:12]} of {snapshot.source}, {model}{serial}, "
        f"{decimal_size(snapshot.size)}, taken {when}:"
    ]
    for image in snapshot.images:
        if image.name == "head" or (partition is not None and image.number != partition):
            continue
        label = f' "{image.label}"' if image.label else ""
        lines.append(
            f"  partition {image.number}, {decimal_size(image.size)}, "
            f"{image.fstype or image.type_name or 'raw'}{label}"
        )
    return "\n".join(lines)


def restore_disk_command(
    repo: Repository, snapshot: Snapshot, partition: int | None, args: argparse.Namespace
) -> int:
    from imaging.cli.repo_commands import confirm, report_restore
    from imaging.disks.restore import (
        DiskRestoreResult,
        check_disk_target,
        describe_target,
        restore_disk,
    )
    from imaging.progress import reporter_for
    from imaging.restore import RestoreOptions

    target = args.target
    check_disk_target(repo, snapshot, target, partition=partition)
    what = f"partition {partition} of " if partition else ""
    extras = []
    if args.grow:
        extras.append("The last partition and its filesystem will be grown to fill the target.")
    if args.new_ids:
        extras.append("The disk and its partitions get new GUIDs (or a new MBR signature).")
    confirm(
        f"This will overwrite\n{describe_target(target)}\n"
        f"with {what}{describe_snapshot(snapshot, partition)}\n"
        + "".join(f"{line}\n" for line in extras)
        + "Everything now on the target is lost.",
        args,
    )
    options = RestoreOptions(verify=not args.no_verify, ignore_damage=args.ignore_damage)
    result = restore_disk(
        repo,
        snapshot,
        target,
        partition=partition,
        grow=args.grow,
        new_ids=args.new_ids,
        progress=reporter_for(args.progress),
        options=options,
    )
    if isinstance(result, DiskRestoreResult):
        if result.table:
            print(f"Partition table ({result.table}) recreated on {target}.")
        if result.kernel:
            print(f"The kernel re-read the partition table ({result.kernel}).")
        if result.grown:
            print(f"Grown: {result.grown}.")
        for note in result.notes:
            print(f"Note: {note}", file=sys.stderr)
    return report_restore(result, args)


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    from imaging.cli import repo_commands

    p = sub.add_parser(
        "disks", parents=[plain], help="list disks, partitions, the boot disk and repositories"
    )
    p.add_argument("--json", action="store_true", help="print the disks as JSON")
    p.add_argument(
        "--no-used", action="store_true", help="do not ask filesystems how much they use"
    )
    p.set_defaults(handler=cmd_disks)
    repo_commands.RESTORE_HANDLERS["disk"] = restore_disk_command
