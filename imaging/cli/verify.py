"""`hourglass verify`: check the repository's structure, data, or stored checksums only."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imaging import jobs
from imaging.cli.common import open_repo, print_json, repo_location
from imaging.errors import IntegrityError
from imaging.progress import reporter_for
from imaging.repository.verify import VerifyReport, summary_line
from imaging.units import count, parse_duration


def cmd_verify(args: argparse.Namespace) -> int:
    if args.keyless:
        report = jobs.verify_keyless(repo_location(args), progress=reporter_for(args.progress))
        print(f"Checked {report.checked} stored files without the key.")
        return _print_damage(report)
    repo = open_repo(args)
    request = jobs.VerifyRequest(
        snapshot=args.snapshot or None,
        read_data=args.read_data,
        max_time=parse_duration(args.max_time) if args.max_time else None,
    )
    report = jobs.verify(repo, request, progress=reporter_for(args.progress))
    for warning in report.warnings:
        print(f"hourglass: warning: {warning}", file=sys.stderr)
    if args.json:
        print_json(
            {
                "ok": report.ok,
                "complete": report.complete,
                "snapshots": report.snapshots,
                "chunks": report.chunks,
                "checked": report.checked,
                "warnings": report.warnings,
                "degraded": report.degraded,
                "damage": [
                    {"what": d.what, "reason": d.reason, "affects": d.affects}
                    for d in report.damage
                ],
            }
        )
    else:
        kind = "data" if args.read_data else "structure"
        print(f"Verified {kind}: {summary_line(report)}.")
        if report.resumed:
            print("Continued where the previous time-boxed verify stopped.")
        if not report.complete:
            print("Time is up; run the same command again to continue where this one stopped.")
        for line in report.degraded:
            print(f"WARNING read around {line}; `hourglass check --repair` rebuilds it.")
    return _print_damage(report, quiet=args.json)


def _print_damage(report: VerifyReport, *, quiet: bool = False) -> int:
    if not quiet:
        for damage in report.damage:
            print(f"DAMAGED {damage.describe()}")
    if not report.ok:
        print(
            "hourglass: error: the repository is damaged "
            f"({count(len(report.damage), 'problem')}).",
            file=sys.stderr,
        )
        return IntegrityError.exit_code
    return 0


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser("verify", parents=[common], help="check the repository")
    p.add_argument("snapshot", nargs="?", metavar="SNAPSHOT")
    p.add_argument("--read-data", action="store_true", help="read and authenticate every chunk")
    p.add_argument("--max-time", metavar="DURATION", help="stop after this long; resume next time")
    p.add_argument(
        "--keyless", action="store_true", help="only check stored checksums (needs no passphrase)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_verify)
