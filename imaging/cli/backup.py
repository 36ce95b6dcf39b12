"""`hourglass backup`: back up disks, partitions or image files, then check the snapshot."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imaging import jobs
from imaging.cli.common import add_bwlimit, open_repo, print_json
from imaging.errors import IntegrityError
from imaging.progress import reporter_for
from imaging.repository.throttle import parse_window
from imaging.units import count, human_duration, human_size


def _say(line: str) -> None:
    print(f"hourglass: {line}", file=sys.stderr, flush=True)


def cmd_backup(args: argparse.Namespace) -> int:
    window = parse_window(args.window) if args.window else None
    repo = open_repo(args)
    request = jobs.BackupRequest(
        sources=tuple(args.sources),
        check=jobs.Check(args.check),
        rescue=args.rescue,
        force=args.force,
        window=window,
    )
    result = jobs.backup(repo, request, progress=reporter_for(args.progress), say=_say)
    snapshot, report = result.snapshot, result.report
    if args.json:
        print_json(
            snapshot.summary()
            | {
                "stats": snapshot.record.stats.to_dict(),
                "warnings": result.warnings,
                "check": result.check.value,
                "check_ok": result.ok,
            }
        )
    else:
        st = snapshot.record.stats
        elapsed = st.elapsed or 1e-9
        checked = {
            jobs.Check.NONE: "not checked",
            jobs.Check.STRUCTURE: "structure checked",
            jobs.Check.DATA: "every chunk read back",
        }[result.check]
        print(
            f"Snapshot {snapshot.id[:12]} of {snapshot.source} at "
            f"{snapshot.time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
            f"  read {human_size(st.read)} in {human_duration(elapsed)} "
            f"({human_size(st.read / elapsed)}/s); "
            f"new {human_size(st.new_bytes)}, "
            f"already stored {human_size(st.dedup_bytes)}; "
            f"added {human_size(snapshot.stored)} to the repository; {checked}"
        )
        for line in result.warnings:
            print(f"  WARNING {line}")
    if report is not None and not report.ok:
        for damage in report.damage:
            print(f"DAMAGED {damage.describe()}", file=sys.stderr)
        print(
            f"hourglass: error: snapshot {snapshot.id[:12]} was recorded, but checking it "
            f"found {count(len(report.damage), 'problem')}.",
            file=sys.stderr,
        )
        return IntegrityError.exit_code
    return 0


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "backup", parents=[common], help="back up a disk, partitions or an image file"
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument(
        "--rescue", action="store_true", help="store zeros for unreadable ranges and go on"
    )
    p.add_argument(
        "--force", action="store_true", help="image a partition even if mounted read-write"
    )
    p.add_argument(
        "--check",
        choices=[c.value for c in jobs.Check],
        default=jobs.Check.STRUCTURE.value,
        help="once committed: structure (default: every chunk the snapshot names is "
        "stored), data (also read every chunk back), none",
    )
    add_bwlimit(p)
    p.add_argument(
        "--window",
        metavar="START-END",
        help="back up only between these local times (22:00-06:00): wait for the start; "
        "at the end stop with no snapshot, keeping what was stored (exit 14)",
    )
    p.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    p.set_defaults(handler=cmd_backup)
