"""What several commands share: the options every command takes, opening the repository,
asking for confirmation, and the rows and messages more than one command prints.

Command modules import this and the engine, never each other (tests/imaging/test_cli_layout.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from imaging import passphrase
from imaging.errors import Cancelled, UsageError
from imaging.repository.redundant import Problem, RedundantStore
from imaging.repository.s3store import S3Options
from imaging.repository.storage import Store
from imaging.repository.store import DamagedSnapshot, Repository, Snapshot, as_store
from imaging.repository.throttle import Limiter, ThrottledStore, parse_timetable
from imaging.units import count, human_size

Handler = Callable[[argparse.Namespace], int]


def options(repo: bool = True) -> argparse.ArgumentParser:
    """Options every command takes, also after the command name."""
    p = argparse.ArgumentParser(add_help=False)
    if repo:
        p.add_argument(
            "--repo",
            default=os.environ.get("HOURGLASS_REPO"),
            help="repository: a directory or s3://BUCKET[/PREFIX] (default: $HOURGLASS_REPO)",
        )
        p.add_argument(
            "--s3-endpoint",
            metavar="URL",
            help="the object store's endpoint for s3:// repositories (default: "
            "$AWS_ENDPOINT_URL, else AWS); credentials come from the environment or "
            "~/.aws/credentials or --credentials, never the command line",
        )
        p.add_argument(
            "--credentials",
            metavar="FILE",
            type=Path,
            help="s3:// repositories: an AWS credentials file ([default] aws_access_key_id, "
            "aws_secret_access_key) instead of boto3's usual chain",
        )
        p.add_argument(
            "--ca-file",
            metavar="FILE",
            type=Path,
            help="s3:// repositories: trust this CA certificate (PEM) for the endpoint's TLS "
            "instead of the system's CAs",
        )
        p.add_argument(
            "--passphrase-file",
            metavar="FILE",
            help="read the passphrase from FILE (else $HOURGLASS_PASSPHRASE, else a prompt)",
        )
    p.add_argument(
        "--progress",
        choices=["auto", "tty", "json", "none"],
        default="auto",
        help="progress display: a bar on a terminal, JSON lines on stderr, or nothing",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


def repo_path(args: argparse.Namespace) -> str:
    if not args.repo:
        raise UsageError("No repository given.", "Use --repo REPO or set HOURGLASS_REPO.")
    return str(args.repo)


def s3_options(args: argparse.Namespace) -> S3Options:
    """How to reach s3:// locations: --s3-endpoint, --ca-file, --credentials."""
    return S3Options(
        endpoint=getattr(args, "s3_endpoint", None),
        ca_file=getattr(args, "ca_file", None),
        credentials_file=getattr(args, "credentials", None),
    )


def add_bwlimit(p: argparse.ArgumentParser) -> None:
    """``--bwlimit``, for the commands that move data to or from a repository."""
    p.add_argument(
        "--bwlimit",
        metavar="TIMETABLE",
        help='limit the bandwidth, in rclone\'s syntax: "10M", "UP:DOWN" or times of day '
        '"08:00,512k 18:00,10M 23:00,off" (weekdays: "Mon-08:00,512k"); k, M, G are '
        "KiB, MiB, GiB per second",
    )


def limiter(args: argparse.Namespace) -> Limiter | None:
    """The one bandwidth limiter of this command (``--bwlimit``), shared by every store it
    opens; None without a limit."""
    text = getattr(args, "bwlimit", None)
    if not text:
        return None
    made: Limiter | None = getattr(args, "_limiter", None)
    if made is None:
        made = Limiter(parse_timetable(text))
        args._limiter = made
    return made if made.timetable.limited else None


def repo_location(
    args: argparse.Namespace, path: str | None = None, *, s3: S3Options | None = None
) -> Store:
    """The store of ``path`` (else --repo): a directory, or s3:// reached as ``s3`` (else
    :func:`s3_options`) says; kept to ``--bwlimit`` when the command has one."""
    store = as_store(path or repo_path(args), s3=s3 or s3_options(args))
    if isinstance(store, RedundantStore):
        store.on_problem = _warn
    limit = limiter(args)
    return ThrottledStore(store, limit) if limit is not None else store


def _warn(problem: Problem) -> None:
    """A set read around a member: say so as it happens (once per member)."""
    print(
        f"hourglass: warning: {problem.describe()}; read from the other members. "
        "`hourglass check` lists what is missing, `hourglass check --repair` rebuilds it.",
        file=sys.stderr,
    )


def open_repo(args: argparse.Namespace) -> Repository:
    return Repository.open(repo_location(args), passphrase.source(args.passphrase_file))


def can_confirm(args: argparse.Namespace) -> None:
    """Refuse, before anything is shown or done, when a confirmation will be needed and there
    is no terminal to ask on (and no ``--yes``)."""
    if not getattr(args, "yes", False) and not sys.stdin.isatty():
        raise UsageError(
            "Confirmation needed, but there is no terminal to ask on.",
            "Add --yes to confirm on the command line.",
        )


def confirm(question: str, args: argparse.Namespace) -> None:
    """Ask for a typed ``yes`` unless ``--yes``; refuse when there is nobody to ask."""
    if getattr(args, "yes", False):
        return
    can_confirm(args)
    print(question, file=sys.stderr)
    try:
        answer = input("Type yes to continue: ").strip().lower()
    except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the question: a "no"
        print(file=sys.stderr)
        answer = ""
    if answer != "yes":
        raise Cancelled("Cancelled: nothing was changed.")


def local_time(moment: datetime) -> str:
    """A snapshot's or a file's time as every listing shows it."""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def snapshot_row(s: Snapshot) -> str:
    when = s.time.strftime("%Y-%m-%d %H:%M:%S")
    source = f"{s.source} (file journal)" if s.kind == "journal" else s.source
    return f"{s.id[:12]}  {when}  {human_size(s.size):>10}  {human_size(s.stored):>10}  {source}"


def damaged_row(d: DamagedSnapshot) -> str:
    """A damaged snapshot where its row would be: its time is lost, its file's is shown."""
    when = d.written.strftime("%Y-%m-%d %H:%M:%S")
    return f"{d.id[:12]}  {when}  {'DAMAGED':>10}  {'':>10}  {d.reason}"


def report_damaged(damaged: list[DamagedSnapshot]) -> None:
    """Name every damaged manifest on stderr, with what can be done about it."""
    for d in damaged:
        print(f"DAMAGED {d.describe()}", file=sys.stderr)
    if damaged:
        print(
            f"hourglass: error: {count(len(damaged), 'snapshot manifest')} cannot be read; "
            "the other snapshots are intact.",
            file=sys.stderr,
        )
        print(
            "hourglass: hint: `hourglass forget ID` removes a damaged snapshot (gc stops "
            "until then).",
            file=sys.stderr,
        )


def checked_new(get: Callable[[], str], allow_short: bool) -> Callable[[], str]:
    """``get``, with the new passphrase's length judged when it is read (a warning on
    stderr; refused when too short)."""

    def checked() -> str:
        secret = get()
        warning = passphrase.check_new(secret, allow_short=allow_short)
        if warning:
            print(f"hourglass: warning: {warning}", file=sys.stderr)
        return secret

    return checked


def add_short_passphrase_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-short-passphrase",
        action="store_true",
        help=f"accept a new passphrase of fewer than {passphrase.MIN_LENGTH} characters",
    )
