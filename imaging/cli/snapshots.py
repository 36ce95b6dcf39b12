"""`hourglass snapshots`: list the snapshots, damaged manifests where they fall."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imaging.cli.common import damaged_row, open_repo, print_json, report_damaged, snapshot_row
from imaging.errors import IntegrityError
from imaging.repository import seen, selectors
from imaging.repository.store import DamagedSnapshot, SnapshotList


def cmd_snapshots(args: argparse.Namespace) -> int:
    """List the snapshots; damaged manifests are listed where they fall, marked, and make
    the command exit 3 (damage found) after the complete list (README.md)."""
    repo = open_repo(args)
    listed = repo.snapshots()
    rollback = seen.note_listing(repo, listed)
    if rollback:
        print(f"WARNING {rollback}", file=sys.stderr)
    snapshots = [s for s in listed if not args.source or args.source in (s.source, s.source_id)]
    # A damaged manifest's source is unknown: it is shown whatever --source says.
    shown = SnapshotList(snapshots, listed.damaged)
    rows = selectors.timeline(shown)
    if args.json:
        print_json(
            [
                item.summary()
                if isinstance(item, DamagedSnapshot)
                else item.summary() | {"damaged": False}
                for item in rows
            ]
        )
    elif not rows:
        print("No snapshots.")
    else:
        print(f"{'ID':<12}  {'TIME':<19}  {'SIZE':>10}  {'STORED':>10}  SOURCE")
        for item in rows:
            print(damaged_row(item) if isinstance(item, DamagedSnapshot) else snapshot_row(item))
    report_damaged(listed.damaged)
    return IntegrityError.exit_code if listed.damaged else 0


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser("snapshots", parents=[common], help="list snapshots")
    p.add_argument("--json", action="store_true")
    p.add_argument("--source", help="only snapshots of this source")
    p.set_defaults(handler=cmd_snapshots)
