"""`hourglass unattended`: the appliance's unattended mode (kernel parameters, a config file,
the vendor's ``[unattended]`` defaults)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from imaging.process import run, which
from imaging.unattended.run import read_cmdline, run_unattended


def after(action: str, *, start_ui: bool) -> None:
    """What the orders say to do once the result line is out.

    Power actions are queued (``--no-block``): the appliance's unit running this is itself
    stopped by them. With ``start_ui`` false, "ui" just returns: the appliance's own units
    start the app once this has finished.
    """
    if action == "poweroff":
        run(["systemctl", "--no-block", "poweroff"], check=False)
    elif action == "reboot":
        run(["systemctl", "--no-block", "reboot"], check=False)
    elif action == "shell":
        os.execv(which("bash"), ["bash", "-l"])
    elif action == "ui" and start_ui:
        hourglass = which("hourglass")
        os.execv(hourglass, [hourglass, "ui"])


def cmd_unattended(args: argparse.Namespace) -> int:
    cmdline = read_cmdline(args.cmdline_file)
    outcome = run_unattended(cmdline)
    if not args.no_after:
        after(outcome.after, start_ui=not args.no_ui)
    return 0 if outcome.ok else 1


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "unattended",
        parents=[plain],
        help="carry out hourglass.* kernel parameters (over the vendor's unattended defaults) "
        "and print one HOURGLASS-RESULT line",
    )
    p.add_argument(
        "--cmdline-file",
        default="/proc/cmdline",
        metavar="FILE",
        help="read the parameters from FILE instead of the kernel command line",
    )
    p.add_argument(
        "--no-after", action="store_true", help="do not power off, reboot or start anything"
    )
    p.add_argument(
        "--no-ui",
        action="store_true",
        help="for hourglass.after=ui, exit instead of starting the app (the appliance's units "
        "start it)",
    )
    p.set_defaults(handler=cmd_unattended)
