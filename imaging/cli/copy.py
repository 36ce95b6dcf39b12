"""`hourglass copy`: copy snapshots into a mirror of the repository (off-site copies)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from imaging import jobs
from imaging.cli.common import (
    add_bwlimit,
    limiter,
    open_repo,
    print_json,
    repo_location,
    s3_options,
)
from imaging.errors import IntegrityError, NotFinished, UsageError
from imaging.progress import reporter_for
from imaging.repository.s3store import S3Options
from imaging.repository.throttle import parse_window
from imaging.units import count, human_duration, human_size


def _say(line: str) -> None:
    print(f"hourglass: {line}", file=sys.stderr, flush=True)


def cmd_copy(args: argparse.Namespace) -> int:
    if not args.to:
        raise UsageError("copy needs a target: --to DST.")
    window = parse_window(args.window) if args.window else None
    limiter(args)  # a bad --bwlimit is refused before anything is opened
    repo = open_repo(args)
    request = jobs.CopyRequest(
        target=repo_location(args, args.to, s3=_target_s3(args)),
        snapshots=tuple(args.snapshots),
        source=args.source,
        window=window,
    )
    result = jobs.copy(repo, request, progress=reporter_for(args.progress), say=_say)
    if args.json:
        print_json(result.to_dict())
    else:
        made = " (created)" if result.created else ""
        print(
            f"Copied {count(len(result.copied), 'snapshot')} to {result.target}{made}; "
            f"{len(result.already)} were there already. Sent {result.chunks_sent} chunks, "
            f"{human_size(result.bytes_sent)} in {human_duration(result.elapsed)} "
            f"({human_size(result.rate)}/s)."
        )
    for line in result.damaged:
        print(f"DAMAGED {line}", file=sys.stderr)
    if result.damaged:
        print(
            f"hourglass: error: {count(len(result.damaged), 'snapshot manifest')} of the "
            f"source cannot be read and {'was' if len(result.damaged) == 1 else 'were'} not "
            "copied; the other snapshots were.",
            file=sys.stderr,
        )
    if not result.complete:
        when = result.stopped_at.strftime("%H:%M:%S") if result.stopped_at else "?"
        left = ", ".join(s[:12] for s in result.remaining)
        print(
            f"hourglass: the window {window} closed at {when}: "
            f"{count(len(result.copied), 'snapshot')} "
            f"copied, {len(result.remaining)} left ({left}); what was sent is kept. Run the "
            "same command again to resume.",
            file=sys.stderr,
        )
        return NotFinished.exit_code
    return IntegrityError.exit_code if result.damaged else 0


def _target_s3(args: argparse.Namespace) -> S3Options:
    """How to reach an s3:// target: --to-s3-endpoint, --to-credentials, --to-ca-file, each
    the source's (--s3-endpoint ...) when not given, so one object store needs them once."""
    source = s3_options(args)
    return S3Options(
        endpoint=args.to_s3_endpoint or source.endpoint,
        ca_file=args.to_ca_file or source.ca_file,
        credentials_file=args.to_credentials or source.credentials_file,
    )


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "copy",
        parents=[common],
        help="copy snapshots the target lacks into a mirror of the repository",
    )
    p.add_argument(
        "snapshots", nargs="*", metavar="SNAPSHOT", help="id, prefix, 'latest' or a local time"
    )
    p.add_argument(
        "--to",
        metavar="DST",
        help="the mirror: a directory or s3://BUCKET[/PREFIX] (made when missing)",
    )
    p.add_argument("--source", help="copy only snapshots of this source")
    p.add_argument(
        "--to-s3-endpoint",
        metavar="URL",
        help="an s3:// target on another object store: its endpoint (default: the source's)",
    )
    p.add_argument(
        "--to-credentials",
        metavar="FILE",
        type=Path,
        help="the s3:// target's AWS credentials file (default: the source's)",
    )
    p.add_argument(
        "--to-ca-file",
        metavar="FILE",
        type=Path,
        help="the s3:// target's CA certificate for TLS (default: the source's)",
    )
    add_bwlimit(p)
    p.add_argument(
        "--window",
        metavar="START-END",
        help="work only between these local times (22:00-06:00): wait for the start, stop "
        "cleanly at the end (exit 14; run again to resume)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_copy)
