"""A QR code drawn with text: two rows of modules per line of block elements.

Light modules are drawn (the terminal's background is dark), dark ones are left blank, with a
light quiet zone around them, so a phone reads it off the screen. Only where the console has
block elements (the ``full`` and ``linux`` kinds: recovery_ui.console); a serial line may not.
"""

from __future__ import annotations

import qrcode
from qrcode.constants import ERROR_CORRECT_L

QUIET = 2  # modules of light margin (phones read a screen with less than the standard 4)
# (upper module light, lower module light) -> the block element that draws them.
BLOCKS = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}


def modules(text: str) -> list[list[bool]]:
    """The QR code of ``text`` as rows of modules, True where dark, with the quiet zone.

    Upper case letters, digits and ``-`` fit QR's alphanumeric mode: a recovery key (69
    characters) is a version 3 code, 29 modules square, at the lowest error correction a
    screen needs."""
    code = qrcode.QRCode(border=QUIET, error_correction=ERROR_CORRECT_L)
    code.add_data(text)
    code.make(fit=True)
    return [list(row) for row in code.get_matrix()]


def draw(text: str) -> str:
    """Lines of block elements showing the QR code of ``text``."""
    rows = modules(text)
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))  # a light row under the quiet zone
    lines = []
    for upper, lower in zip(rows[0::2], rows[1::2], strict=True):
        lines.append("".join(BLOCKS[(not a, not b)] for a, b in zip(upper, lower, strict=True)))
    return "\n".join(lines)
