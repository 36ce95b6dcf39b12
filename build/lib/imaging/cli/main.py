"""`hourglass`: the command line. The names and options here are a contract (README.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from imaging import __version__
from imaging.errors import HourglassError

Handler = Callable[[argparse.Namespace], int]


def _common(repo: bool = True) -> argparse.ArgumentParser:
    """Options every command takes, also after the command name."""
    p = argparse.ArgumentParser(add_help=False)
    if repo:
        p.add_argument(
            "--repo",
            default=os.environ.get("HOURGLASS_REPO"),
            help="repository directory (default: $HOURGLASS_REPO)",
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


def build_parser() -> argparse.ArgumentParser:
    from imaging.cli import repo_commands

    parser = argparse.ArgumentParser(
        prog="hourglass",
        description=(
            "Image disks into a deduplicated, encrypted repository; restore any point in time."
        ),
    )
    parser.add_argument("--version", action="version", version=f"hourglass {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common()
    plain = _common(repo=False)
    repo_commands.register(sub, common)
    for entry_point in entry_points(group="hourglass.commands"):
        try:
            register = entry_point.load()
        except ImportError:
            continue  # that package is not installed completely: its commands are absent
        register(sub, common, plain)
    return parser


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except HourglassError as e:
        if args.debug:
            traceback.print_exc()
        print(f"hourglass: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hourglass: hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("\nhourglass: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        else:
            print(
                f"hourglass: internal error: {type(e).__name__}: {e}. "
                "Run again with --debug for the details.",
                file=sys.stderr,
            )
        return 70


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
