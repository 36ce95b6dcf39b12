"""`hourglass ui`, registered with the engine's CLI through the ``hourglass.commands`` entry
point group, so the engine never names the app."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_ui(args: argparse.Namespace) -> int:
    from recovery_ui.app import run

    return run()


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ui", parents=[plain], help="start the recovery app")
    p.set_defaults(handler=cmd_ui)
