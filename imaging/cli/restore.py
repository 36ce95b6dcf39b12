"""`hourglass restore`: write a snapshot back to a disk, a partition or a file."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imaging import jobs
from imaging.cli.common import add_bwlimit, confirm, open_repo
from imaging.errors import IntegrityError, UsageError
from imaging.image.backup import describe_unreadable
from imaging.image.restore import RestoreResult
from imaging.progress import reporter_for
from imaging.repository.selectors import parse_time
from imaging.units import count, human_size


def report_restore(result: RestoreResult, args: argparse.Namespace) -> int:
    for damaged in result.damaged:
        print(f"DAMAGED {damaged.describe()}", file=sys.stderr)
    status = "verified" if result.verified else "not verified"
    print(
        f"Restored snapshot {result.snapshot.id[:12]} "
        f"({result.snapshot.time.strftime('%Y-%m-%d %H:%M:%S')}) to {result.target}: "
        f"{human_size(result.written)} written, {status}."
    )
    for line in describe_unreadable(result.snapshot):
        print(f"WARNING the source was unreadable there at backup: {line}", file=sys.stderr)
    for line in result.degraded:
        print(f"WARNING read around {line}", file=sys.stderr)
    if result.damaged:
        print(
            f"hourglass: error: {count(len(result.damaged), 'damaged range')} "
            f"{'was' if len(result.damaged) == 1 else 'were'} filled with zeros.",
            file=sys.stderr,
        )
        return IntegrityError.exit_code
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    snapshot, target = args.snapshot, args.target
    at = None
    if args.at is not None:
        at = parse_time(args.at)
        if target is None:  # `restore --at TIME TARGET`: the one operand is the target
            snapshot, target = None, snapshot
    elif target is None:
        raise UsageError(
            "restore needs a SNAPSHOT and a TARGET (or --at TIME and a TARGET).",
            "For example: hourglass restore latest /dev/sdb",
        )
    if args.host and at is None:
        raise UsageError("--host names whose file journal --at replays: it needs --at TIME.")
    repo = open_repo(args)

    def confirm_restore(preview: jobs.RestorePreview) -> None:
        for warning in preview.warnings:
            print(f"hourglass: warning: {warning}", file=sys.stderr)
        confirm(preview.question(), args)

    request = jobs.RestoreRequest(
        snapshot=snapshot or "",
        target=target,
        source=args.source,
        grow=args.grow,
        grow_partition=args.grow_partition,
        new_ids=args.new_ids,
        scratch=args.scratch,
        verify=not args.no_verify,
        ignore_damage=args.ignore_damage,
        at=at,
        host=args.host,
    )
    result = jobs.restore(
        repo, request, confirm=confirm_restore, progress=reporter_for(args.progress)
    )
    if isinstance(result, jobs.DiskRestoreResult):
        if result.table:
            print(f"Partition table ({result.table}) recreated on {target}.")
        if result.kernel:
            print(f"The kernel re-read the partition table ({result.kernel}).")
        for line in result.plan:
            print(line)
        if result.grown:
            print(f"Grown: {result.grown}.")
        if result.shrunk:
            print(f"Shrunk: {result.shrunk}.")
        for line in result.new_ids:
            print(f"New id: {line}.")
        for line in result.kept_ids:
            print(f"Kept id: {line}.")
        if args.new_ids and result.new_ids:
            changed = "; ".join(result.references) or "none"
            print(f"References to the new ids rewritten (file and count): {changed}.")
        for note in result.notes:
            print(f"Note: {note}", file=sys.stderr)
        if result.replayed:
            print(result.replayed)
    return report_restore(result, args)


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser("restore", parents=[common], help="restore a snapshot to a disk or file")
    p.add_argument(
        "snapshot",
        metavar="SNAPSHOT",
        help="id, prefix, 'latest' or a local time (with --at: optional, the image to start from)",
    )
    p.add_argument("target", metavar="TARGET", nargs="?", help="block device or file to overwrite")
    p.add_argument(
        "--at",
        metavar="TIME",
        help='the whole system as of this second ("YYYY-MM-DD HH:MM:SS", local time): the '
        "newest disk image at or before it, then the host's file journal replayed onto its "
        "filesystems up to that second",
    )
    p.add_argument(
        "--host",
        metavar="HOST",
        help="with --at: whose file journal to replay (default: the host the image names)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--source", help="choose among snapshots of this source only")
    p.add_argument("--no-verify", action="store_true", help="do not read back what was written")
    p.add_argument(
        "--ignore-damage", action="store_true", help="write zeros for damaged chunks and go on"
    )
    add_bwlimit(p)
    p.add_argument(
        "--grow",
        action="store_true",
        help="on a larger disk: grow the largest data partition (C:, / or /home) into the "
        "room, and move the partitions after it to the end",
    )
    p.add_argument(
        "--grow-partition",
        "--resize-partition",
        dest="grow_partition",
        metavar="N",
        type=int,
        help="like --grow, but grow partition N (the partitions after it move); on a smaller "
        "disk, shrink partition N instead of the largest",
    )
    p.add_argument(
        "--scratch",
        metavar="DIR",
        help="where a filesystem is shrunk before it is written to a smaller disk (room for "
        "its data; by default beside the repository on its drive, else the temporary "
        "directory)",
    )
    p.add_argument(
        "--new-ids",
        action="store_true",
        help="give the restored disk new ids (disk and partition GUIDs, filesystem UUIDs "
        "where safe, LVM PV and VG UUIDs) and update /etc/fstab, crypttab and GRUB to them: "
        "for keeping both disks in one PC",
    )
    p.set_defaults(handler=cmd_restore)
