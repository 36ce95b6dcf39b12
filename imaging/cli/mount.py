"""`hourglass mount` and `hourglass umount`: a snapshot's partition, read-only (docs/FILES.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imaging.cli.common import local_time, open_repo
from imaging.files.mount import mount_snapshot, unmount_snapshot


def cmd_mount(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    info = mount_snapshot(repo, args.snapshot, args.dir, source=args.source)
    for path in info.cleaned:
        print(f"Cleaned up a stale mount at {path}.", file=sys.stderr)
    print(
        f"Mounted {info.image} ({info.fstype}) of snapshot {info.snapshot.id[:12]} "
        f"({local_time(info.snapshot.time)}) read-only at {info.mountpoint}. "
        f"Unmount with: hourglass umount {info.mountpoint}"
    )
    return 0


def cmd_umount(args: argparse.Namespace) -> int:
    unmount_snapshot(args.dir)
    print(f"Unmounted {args.dir}.")
    return 0


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    snapshot_help = "id, prefix, 'latest' or a local time; @N for partition N"

    p = sub.add_parser("mount", parents=[common], help="mount a snapshot's partition read-only")
    p.add_argument("snapshot", metavar="SNAPSHOT[:N]", help=snapshot_help)
    p.add_argument("dir", metavar="DIR", help="mount point (created if missing)")
    p.add_argument("--source", help="choose among snapshots of this source only")
    p.set_defaults(handler=cmd_mount)

    p = sub.add_parser("umount", parents=[common], help="unmount what `hourglass mount` mounted")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(handler=cmd_umount)
