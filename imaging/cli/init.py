"""`hourglass init`: create a repository."""

from __future__ import annotations

import argparse
from typing import Any

from imaging import passphrase
from imaging.cli.common import add_short_passphrase_option, checked_new, repo_location, s3_options
from imaging.errors import UsageError
from imaging.repository import codec
from imaging.repository.redundant import new_set
from imaging.repository.storage import Store
from imaging.repository.store import DEFAULT_LEVEL, Repository
from imaging.units import binary_size


def cmd_init(args: argparse.Namespace) -> int:
    if args.redundancy:
        locations = args.path or ([args.repo] if args.repo else [])
        path: Store = new_set(args.redundancy, locations, s3_options(args))
    elif len(args.path) > 1:
        raise UsageError(
            f"init takes one location, {len(args.path)} given.",
            "A repository over several locations: --redundancy copies|K+M LOC1 LOC2 ...",
        )
    else:
        path = repo_location(args, args.path[0] if args.path else None)
    secret = None
    if args.encryption != "none":
        secret = checked_new(
            passphrase.source(args.passphrase_file, confirm=True), args.allow_short_passphrase
        )
    repo = Repository.init(
        path,
        encryption=args.encryption,
        passphrase=secret,
        level=args.compression_level,
        block_size=args.block_size,
    )
    kind = "an encrypted" if repo.encrypted else "an unencrypted"
    print(f"Created {kind} repository at {repo.location} ({binary_size(repo.block_size)} blocks).")
    if args.redundancy:
        print("Any of its locations opens it: the others are named in each one's descriptor.")
    if repo.encrypted:
        print(
            "Keep the passphrase safe: without it the backups cannot be read. "
            "`hourglass key add --recovery` prints a recovery key to write down or photograph."
        )
    return 0


def _block_size(text: str) -> int:
    sizes = {human_block(n): n for n in codec.BLOCK_SIZES}
    key = text.strip().upper().removesuffix("IB").removesuffix("B")
    if key not in sizes:
        raise argparse.ArgumentTypeError(f"choose one of {', '.join(sizes)}")
    return sizes[key]


def human_block(n: int) -> str:
    """``1048576`` -> ``"1M"``, the spelling --block-size takes."""
    return f"{n >> 20}M" if n >= 1 << 20 else f"{n >> 10}K"


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help="create a repository")
    p.add_argument(
        "path",
        nargs="*",
        metavar="REPO",
        help="directory or s3://BUCKET[/PREFIX] to create (or --repo); with --redundancy, "
        "every location of the set, in member order",
    )
    p.add_argument(
        "--redundancy",
        metavar="copies|K+M",
        help="spread the repository over the locations given: a whole copy on each (copies, "
        "2 or more locations) or K+M erasure shards (exactly K+M locations; survives M lost)",
    )
    p.add_argument("--encryption", choices=["aes-256-gcm", "none"], default="aes-256-gcm")
    p.add_argument(
        "--compression-level",
        type=int,
        choices=range(1, 20),
        default=DEFAULT_LEVEL,
        metavar="1-19",
        help=f"zstd level for every chunk (default {DEFAULT_LEVEL}: fastest; 3 stores about 7 %% "
        "less and takes about 40 %% longer)",
    )
    p.add_argument(
        "--block-size",
        type=_block_size,
        default=codec.DEFAULT_BLOCK_SIZE,
        metavar="SIZE",
        help="unit of deduplication, fixed for the repository's life: 256K, 512K, 1M, 2M or 4M "
        "(default 1M; smaller stores less for small changes and needs more memory per TiB)",
    )
    add_short_passphrase_option(p)
    p.set_defaults(handler=cmd_init)
