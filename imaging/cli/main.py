"""`hourglass`: the command line. The names and options here are a contract (README.md)."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from imaging import __version__
from imaging.cli.common import Handler, options
from imaging.errors import HourglassError

# Each command and the module imaging.cli.<module> that registers it, in the order
# `hourglass --help` lists them; the app's `ui` comes after, from its entry point. A run of
# one command imports only its module: every module pulls in the engine it needs, and
# importing them all cost each run ~0.1 s (bench/README.md, start-up).
COMMANDS: dict[str, str] = {
    "init": "init",
    "backup": "backup",
    "snapshots": "snapshots",
    "restore": "restore",
    "verify": "verify",
    "copy": "copy",
    "check": "check",
    "forget": "forget",
    "gc": "gc",
    "info": "info",
    "key": "key",
    "disks": "disks",
    "mount": "mount",
    "umount": "mount",
    "files": "files",
    "unattended": "unattended",
    "agent": "agent",
    "lab": "lab",
}


def command_named(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs: its first word that is not an option (the options before
    the command take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or only of ``command`` when it is one of ours."""
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
    if command in COMMANDS:
        importlib.import_module(f"imaging.cli.{COMMANDS[command]}").register(sub, common, plain)
        return parser
    for module in dict.fromkeys(COMMANDS.values()):
        importlib.import_module(f"imaging.cli.{module}").register(sub, common, plain)
    # importlib.metadata takes ~0.04 s to import: only for --help and the app's commands.
    from importlib.metadata import entry_points  # noqa: PLC0415 (see above)

    for entry_point in entry_points(group="hourglass.commands"):
        try:
            register = entry_point.load()
        except ImportError:
            continue  # that package is not installed completely: its commands are absent
        register(sub, common, plain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_named(words))
    args = parser.parse_args(words)
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
