"""`hourglass info`: repository statistics."""

from __future__ import annotations

import argparse
from typing import Any

from imaging.cli.common import open_repo, print_json
from imaging.repository import stats
from imaging.units import binary_size, count, human_size


def cmd_info(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    info = stats.collect(repo)
    if args.json:
        print_json(info.as_dict())
        return 0
    print(
        f"Repository   {info.path}\n"
        f"Encryption   {info.encryption}"
        + (f" ({count(info.key_slots, 'key slot')})" if info.key_slots else "")
        + f"\nBlock size   {binary_size(info.block_size)}"
        + f"\nSnapshots    {info.snapshots} of {count(info.sources, 'source')}\n"
        f"Logical size {human_size(info.logical_bytes)} ({human_size(info.data_bytes)} of data)\n"
        f"Unique data  {human_size(info.unique_bytes)} (deduplication {info.dedup_ratio:.2f}x)\n"
        f"Stored       {human_size(info.stored_bytes)} in {info.chunks} chunks "
        f"(compression {info.compression_ratio:.2f}x)"
    )
    return 0


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser("info", parents=[common], help="repository statistics")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_info)
