"""`hourglass disks`: the disks, their partitions, the boot disk and repositories."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from imaging.cli.common import print_json
from imaging.disks.discover import list_disks, udev_running
from imaging.disks.model import Disk
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


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "disks", parents=[plain], help="list disks, partitions, the boot disk and repositories"
    )
    p.add_argument("--json", action="store_true", help="print the disks as JSON")
    p.add_argument(
        "--no-used", action="store_true", help="do not ask filesystems how much they use"
    )
    p.set_defaults(handler=cmd_disks)
