"""What the terminal the app runs on can draw.

Three kinds of terminal:

- ``full``: a terminal emulator (kmscon on the appliance's screen, xterm, a desktop
  terminal): any Unicode glyph, true colour, Chinese.
- ``linux``: the Linux console (``TERM=linux``): 16 colours (8 backgrounds), only the glyphs
  of its console font (box drawing and block elements, as in code page 437), no Chinese.
- ``serial``: a serial console (``/dev/ttyS0``, a USB serial adapter, IPMI serial-over-LAN):
  nobody knows what is at the other end, so ASCII borders and the 16 ANSI colours.

Overrides: ``HOURGLASS_CONSOLE=full|linux|serial`` names the kind (the appliance's fallback
unit for tty1 sets ``linux``); ``HOURGLASS_CJK=1`` or ``0`` says whether Chinese can be drawn
(for a serial line whose terminal can, or a terminal that cannot).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass

KINDS = ("full", "linux", "serial")
SERIAL_TTY = re.compile(r"^/dev/(ttyS|ttyUSB|ttyACM|ttyAMA|ttymxc|hvc|ttysclp)\d*$")
SERIAL_TERMS = ("vt52", "vt100", "vt102", "vt220", "vt320", "ansi", "dumb", "unknown")


@dataclass(frozen=True)
class Glyphs:
    """Characters the app draws beyond plain text, per kind of terminal."""

    border: str  # Textual border type of panels
    used: str  # the used part of a bar
    free: str  # the rest of a bar
    arrow: str  # "next" in the step line
    bullet: str
    ok: str
    bad: str
    node: str  # a collapsed tree node
    node_open: str  # an expanded tree node
    check_left: str  # a checkbox: left, inner, right
    check_inner: str
    check_right: str
    spinner: str  # frames of the "working" indicator
    tree_lines: tuple[str, str, str, str]  # a tree's guides: space, bar, last, branch
    tree_lines_bold: tuple[str, str, str, str]  # the guides of the highlighted path
    overflow: str  # how text too long for its line ends: "ellipsis" or "crop"
    # Before the focused row of a list and a focused checkbox, and around a focused button
    # (left, right): focus seen without colour (a monochrome serial terminal drops it). Empty
    # where colour is sure (the full kind): the highlight shows it.
    focus: str = ""
    focus_button: tuple[str, str] = ("", "")
    mask: str = "•"  # what a password field shows for each character


FULL = Glyphs(
    "round", "█", "░", "›", "•", "✓", "✗", "▶ ", "▼ ", "▐", "X", "▌", "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏",
    ("  ", "│ ", "└─", "├─"), ("  ", "┃ ", "┗━", "┣━"), "ellipsis",
)  # fmt: skip
# Code page 437 has the single and double box drawing and the block elements (the Linux
# console's fonts map them); not the heavy lines, the eighth blocks or the ellipsis.
LINUX = Glyphs(
    "solid", "█", "░", ">", "*", "+", "x", "+ ", "- ", "▐", "X", "▌", "|/-\\",
    ("  ", "│ ", "└─", "├─"), ("  ", "║ ", "╚═", "╠═"), "crop", ">", ("[", "]"), "*",
)  # fmt: skip
SERIAL = Glyphs(
    "ascii", "#", ".", ">", "*", "+", "x", "+ ", "- ", "[", "X", "]", "|/-\\",
    ("  ", "| ", "`-", "|-"), ("  ", "| ", "`-", "|-"), "crop", ">", ("[", "]"), "*",
)  # fmt: skip
GLYPHS = {"full": FULL, "linux": LINUX, "serial": SERIAL}


@dataclass(frozen=True)
class Terminal:
    kind: str  # "full", "linux" or "serial"
    cjk: bool  # Chinese can be drawn
    reason: str  # why: shown in the Settings screen and the log

    @property
    def safe(self) -> bool:
        """Console-safe drawing: limited glyphs and the 16 ANSI colours."""
        return self.kind != "full"

    @property
    def glyphs(self) -> Glyphs:
        return GLYPHS[self.kind]


def _tty_name() -> str:
    for stream in (sys.stdout, sys.stderr, sys.stdin):
        try:
            return os.ttyname(stream.fileno())
        except (OSError, ValueError, AttributeError):
            continue
    return ""


def detect(environ: Mapping[str, str] | None = None, tty: str | None = None) -> Terminal:
    """The kind of terminal, from the overrides, ``TERM`` and the terminal device."""
    env = os.environ if environ is None else environ
    tty = _tty_name() if tty is None else tty
    term = env.get("TERM", "")
    forced = env.get("HOURGLASS_CONSOLE", "").strip().lower()
    if forced in KINDS:
        kind, reason = forced, f"HOURGLASS_CONSOLE={forced}"
    elif term == "linux":
        kind, reason = "linux", "TERM=linux (the Linux console)"
    elif SERIAL_TTY.match(tty):
        kind, reason = "serial", f"serial console {tty}"
    elif term in SERIAL_TERMS or not term:
        kind, reason = "serial", f"TERM={term or '(unset)'}"
    else:
        kind, reason = "full", f"TERM={term}"
    cjk_forced = env.get("HOURGLASS_CJK", "").strip()
    if cjk_forced in ("0", "1"):
        cjk = cjk_forced == "1"
        reason += f", HOURGLASS_CJK={cjk_forced}"
    else:
        cjk = kind == "full"
    return Terminal(kind, cjk, reason)


def glyphs_of(app: object) -> Glyphs:
    """The glyphs of the app's terminal (full ones for an app that is not Hourglass's)."""
    terminal = getattr(app, "terminal", None)
    return terminal.glyphs if isinstance(terminal, Terminal) else FULL
