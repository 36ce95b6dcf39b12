"""`hourglass ui`, registered with the engine's CLI through the ``hourglass.commands`` entry
point group, so the engine never names the app."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_ui(args: argparse.Namespace) -> int:
    # Late on purpose: every `hourglass` command builds its parser with this module, and
    # Textual must load only for `hourglass ui` (start-up time; scripts without the app).
    from recovery_ui.app import run  # noqa: PLC0415

    return run()


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ui", parents=[plain], help="start the recovery app")
    p.set_defaults(handler=cmd_ui)
