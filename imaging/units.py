"""Sizes, durations and times as people read and type them."""

from __future__ import annotations

import re
from datetime import datetime

from imaging.errors import UsageError

_BINARY = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
_DECIMAL = ["B", "kB", "MB", "GB", "TB", "PB"]


def human_size(n: float) -> str:
    """An amount of bytes as people read it, in the units of disk labels and shop shelves:
    ``250059350016`` -> ``"250.1 GB"``. The one convention of every size the CLI and the app
    show (1 kB = 1000 bytes), so a disk, what is used on it and what a backup stored read
    alike."""
    value = float(n)
    for unit in _DECIMAL:
        if abs(value) < 1000 or unit == _DECIMAL[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``count(1, "snapshot")`` -> ``"1 snapshot"``, ``count(3, "snapshot")`` -> ``"3
    snapshots"``: the engine's English, never "snapshot(s)". ``plural`` where adding an s is
    wrong: ``count(2, "copy", "copies")``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


decimal_size = human_size  # the name the disk code used for the same thing


def binary_size(n: float) -> str:
    """A size chosen in powers of two, as it is set: ``1048576`` -> ``"1.0 MiB"`` (block
    sizes only; amounts of data are :func:`human_size`)."""
    value = float(n)
    for unit in _BINARY:
        if abs(value) < 1024 or unit == _BINARY[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"1h30m"`` or a bare number of seconds -> seconds."""
    text = text.strip().lower()
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if not m or m.end() == pos:
            raise UsageError(f"Cannot read the duration {text!r}.", "Use e.g. 90s, 15m or 1h30m.")
        total += float(m.group(1)) * _SECONDS[m.group(2)]
        pos = m.end()
    if not text:
        raise UsageError("Empty duration.")
    return total


def human_duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def local_now() -> datetime:
    """The current local time with its UTC offset, to the second."""
    return datetime.now().astimezone().replace(microsecond=0)
