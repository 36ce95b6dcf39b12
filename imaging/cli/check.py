"""`hourglass check`: list every location of the repository and compare, without the key;
read a share of the data; repair from the copies or shards."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imaging import jobs
from imaging.cli.common import print_json, repo_path, s3_options
from imaging.errors import IntegrityError, UsageError
from imaging.progress import reporter_for
from imaging.units import count, human_size


def cmd_check(args: argparse.Namespace) -> int:
    request = jobs.CheckRequest(
        read_percent=args.read_data,
        repair=args.repair,
        replace=dict(_replacement(text) for text in args.replace),
    )
    report = jobs.check(
        repo_path(args), request, s3=s3_options(args), progress=reporter_for(args.progress)
    )
    if args.json:
        print_json(
            {
                "ok": report.ok,
                "scheme": report.scheme,
                "objects": report.objects,
                "read": report.read,
                "locations": [
                    {
                        "member": loc.index,
                        "location": loc.location,
                        "state": loc.state(),
                        "unreachable": loc.unreachable,
                        "missing": loc.missing,
                        "damaged": [{"what": w, "reason": r} for w, r in loc.damaged],
                        "rebuilt": loc.rebuilt,
                        "repair_error": loc.repair_error,
                    }
                    for loc in report.locations
                ],
            }
        )
    else:
        kind = f"the {report.scheme} set" if report.scheme else "the repository"
        print(
            f"Checked {kind}: {report.objects} objects on "
            f"{count(len(report.locations), 'location')}."
        )
        for loc in report.locations:
            label = f"member {loc.index}" if loc.index is not None else "location"
            print(f"{label} {loc.location}: {loc.state()}")
            for name in loc.missing[:8]:
                print(f"  MISSING {name}")
            if len(loc.missing) > 8:
                print(f"  ... and {len(loc.missing) - 8} more missing")
            if loc.rebuilt:
                print(f"  rebuilt {count(len(loc.rebuilt), 'object')} from the other members")
            if loc.repair_error:
                print(f"  REPAIR FAILED: {loc.repair_error}")
        if report.read_share is not None:
            print(
                f"Read {report.read} copies or shards ({human_size(report.read_bytes)}), "
                f"{report.read_share:g} % of the objects."
            )
    if report.ok:
        return 0
    print(
        "hourglass: error: the repository is damaged or incomplete "
        f"({count(sum(not loc.ok for loc in report.locations), 'location')}).",
        file=sys.stderr,
    )
    if not args.repair and report.scheme:
        print("hourglass: hint: `hourglass check --repair` rebuilds it.", file=sys.stderr)
    return IntegrityError.exit_code


def _percent(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError("a percentage, e.g. 10") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError("a percentage above 0 and at most 100")
    return value


def _replacement(text: str) -> tuple[int, str]:
    number, equals, location = text.partition("=")
    if not equals or not number.strip().isdigit() or not location:
        raise UsageError(f"--replace {text}: give N=LOCATION (a member number and a location).")
    return int(number), location


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "check", parents=[common], help="compare every location of the repository (no key)"
    )
    p.add_argument(
        "--read-data",
        nargs="?",
        const=100.0,
        type=_percent,
        metavar="PERCENT",
        help="also read and check PERCENT of the objects (default all); the next run "
        "continues after them",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="rebuild what is missing or damaged from the other members",
    )
    p.add_argument(
        "--replace",
        action="append",
        default=[],
        metavar="N=LOCATION",
        help="with --repair: put the empty LOCATION in member N's place and fill it",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_check)
