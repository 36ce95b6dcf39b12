"""`hourglass forget`: forget snapshots by id or by a keep policy."""

from __future__ import annotations

import argparse
from typing import Any

from imaging import jobs
from imaging.cli.common import (
    can_confirm,
    confirm,
    damaged_row,
    open_repo,
    print_json,
    snapshot_row,
)
from imaging.repository.retention import Policy
from imaging.units import count


def cmd_forget(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    policy = None
    if not args.snapshots:
        policy = Policy(
            last=args.keep_last,
            hourly=args.keep_hourly,
            daily=args.keep_daily,
            weekly=args.keep_weekly,
            monthly=args.keep_monthly,
        )
    request = jobs.ForgetRequest(
        snapshots=tuple(args.snapshots), policy=policy, source=args.source, dry_run=args.dry_run
    )

    def show(plan: jobs.ForgetPlan) -> None:
        if args.json:
            print_json(
                {
                    "keep": [s.summary() | {"reasons": r} for s, r in plan.keep],
                    "remove": [s.summary() for s in plan.remove] + [d.summary() for d in plan.lost],
                    "damaged": [d.summary() for d in plan.untouched],
                    "dry_run": args.dry_run,
                }
            )
            return
        verb = "would forget" if args.dry_run else "forget"
        for s, reasons in sorted(plan.keep, key=lambda x: x[0].order):
            print(f"keep    {snapshot_row(s)}  ({', '.join(reasons)})")
        for s in sorted(plan.remove, key=lambda x: x.order):
            print(f"{verb}  {snapshot_row(s)}")
        for d in plan.lost:
            print(f"{verb}  {damaged_row(d)}")
        for d in plan.untouched:
            print(f"damaged {damaged_row(d)}  (forget it by id)")

    def confirm_forget(plan: jobs.ForgetPlan) -> None:
        can_confirm(args)  # before anything is shown
        show(plan)
        confirm(f"This will forget the {count(plan.count, 'snapshot')} listed above.", args)

    result = jobs.forget(repo, request, confirm=confirm_forget)
    if not result.forgotten:
        show(result.plan)  # a dry run, or nothing to forget: nothing was asked
    elif not args.json:
        print(
            f"Forgot {count(result.forgotten, 'snapshot')}. Run `hourglass gc` to free their space."
        )
    return 0


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser("forget", parents=[common], help="forget snapshots by policy")
    p.add_argument("snapshots", nargs="*", metavar="SNAPSHOT", help="forget these snapshots")
    for name in ("last", "hourly", "daily", "weekly", "monthly"):
        p.add_argument(f"--keep-{name}", type=int, default=0, metavar="N")
    p.add_argument("--source", help="apply to snapshots of this source only")
    p.add_argument("--dry-run", action="store_true", help="show what would go")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_forget)
