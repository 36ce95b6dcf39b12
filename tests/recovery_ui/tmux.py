"""A real terminal for the real `hourglass ui`: a tmux server of the test's own, the keys a
person presses (typed one at a time, as over a slow serial line) and what the screen shows.

tmux sets TERM inside its panes to its own (``tmux-256color``), whatever ``-e TERM=`` says:
a command that needs another TERM sets it itself (``env TERM=vt220 hourglass ui``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

HOURGLASS = Path(sys.executable).parent / "hourglass"
START_TIMEOUT = 60.0  # not a speed limit: an app that never draws its home screen fails
TYPING_PAUSE = 0.08  # between two keys: a person typing, one character a packet
FOCUSED_BACKGROUNDS = ("44", "46")  # ansi_blue (lists, buttons), ansi_cyan (fields): app.tcss
SGR = re.compile(r"\x1b\[([0-9;]*)m")


class Tmux:
    """One tmux server of our own (its own socket): nothing of the person's tmux is touched."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __call__(self, *argv: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, *argv], capture_output=True, text=True, check=True
        )
        return result.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "ui")

    def wait_for(self, text: str, timeout: float = 10) -> float:
        started = time.monotonic()
        while text not in self.screen():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{text!r} did not appear:\n{self.screen()}")
            time.sleep(0.02)
        return time.monotonic() - started

    def settled(self, quiet: float = 2.0, timeout: float = 30) -> str:
        """The screen once it has not changed for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        screen, since = self.screen(), time.monotonic()
        while time.monotonic() - since < quiet:
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen kept changing:\n{screen}")
            time.sleep(0.05)
            now = self.screen()
            if now != screen:
                screen, since = now, time.monotonic()
        return screen

    def press(self, *keys: str) -> None:
        """Keys by their tmux names (Tab, Enter, Escape, Down, BSpace), one at a time."""
        for key in keys:
            self("send-keys", "-t", "ui", key)
            time.sleep(TYPING_PAUSE)

    def type(self, text: str) -> None:
        """``text`` typed character by character, each sent as it is (``send-keys -l``)."""
        for character in text:
            self("send-keys", "-t", "ui", "-l", character)
            time.sleep(TYPING_PAUSE)

    def focused_rows(self) -> list[str]:
        """The rows of the screen (as text) that show a focused control: the highlighted row
        of the focused list, the focused field or button (by their console colours)."""
        rows = []
        lines = self("capture-pane", "-p", "-e", "-t", "ui").splitlines()
        for line in lines[1:]:  # the title bar is drawn on blue too
            plain, marked, background = [], False, ""
            for index, part in enumerate(SGR.split(line)):
                if index % 2:  # the parameters of one SGR sequence
                    for code in part.split(";") if part else ["0"]:
                        if code in ("0", "49"):
                            background = ""
                        elif code in ("4" + c for c in "01234567"):
                            background = code
                else:
                    plain.append(part)
                    marked = marked or (background in FOCUSED_BACKGROUNDS and bool(part.strip()))
            if marked:
                rows.append("".join(plain))
        return rows
