"""`hourglass gc`: free the space of forgotten snapshots."""

from __future__ import annotations

import argparse
from typing import Any

from imaging import jobs
from imaging.cli.common import open_repo, print_json
from imaging.units import count, human_size


def cmd_gc(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    result = jobs.gc(repo)
    if args.json:
        print_json({**vars(result), "waited_for": sorted(result.waited_for)})
        return 0
    dead = (
        f" and {count(result.tmp_files, 'file')} of backups that did not finish"
        if result.tmp_files
        else ""
    )
    print(
        f"Referenced chunks: {result.referenced}. Freed {count(result.freed, 'chunk')}{dead}, "
        f"{human_size(result.freed_bytes)}."
    )
    if result.deleted_packs or result.repacked_packs:
        print(
            f"Packs: {result.deleted_packs} deleted, {result.repacked_packs} repacked "
            f"({human_size(result.rewritten_bytes)} of live chunks written anew)."
        )
    if result.direct:
        print("The drive had no room for trash: unreferenced chunks were deleted directly.")
    if result.waiting_batches:
        print(
            f"{result.waiting_batches} batch(es) of unreferenced chunks wait in trash until the "
            "backups or restores running now have finished; the next gc frees them."
        )
    if result.restored:
        print(
            f"Moved {count(result.restored, 'chunk')} back from trash: a new snapshot needs them."
        )
    return 0


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser("gc", parents=[common], help="free the space of forgotten snapshots")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_gc)
