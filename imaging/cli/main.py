"""`hourglass`: the command line. The names and options here are a contract (README.md)."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import entry_points

from imaging import __version__
from imaging.cli import (
    backup,
    check,
    disks,
    files,
    forget,
    gc,
    info,
    init,
    key,
    mount,
    restore,
    snapshots,
    unattended,
    verify,
)
from imaging.cli.common import Handler, options
from imaging.errors import HourglassError

# In the order `hourglass --help` lists them; the app's `ui` comes after, from its entry point.
COMMANDS = (
    init,
    backup,
    snapshots,
    restore,
    verify,
    check,
    forget,
    gc,
    info,
    key,
    disks,
    mount,
    files,
    unattended,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hourglass",
        description=(
            "Image disks into a deduplicated, encrypted repository; restore any point in time."
        ),
    )
    parser.add_argument("--version", action="version", version=f"hourglass {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = options()
    plain = options(repo=False)
    for command in COMMANDS:
        command.register(sub, common, plain)
    for entry_point in entry_points(group="hourglass.commands"):
        try:
            register = entry_point.load()
        except ImportError:
            continue  # that package is not installed completely: its commands are absent
        register(sub, common, plain)
    return parser


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
