"""Progress of long work as structured events.

The engine calls a :data:`ProgressCallback` with :class:`Progress` events; the CLI draws them
as a bar on a terminal or writes them as JSON lines (``--progress json``), the app turns them
into progress bars. :class:`Meter` does the bookkeeping (rate, ETA, throttling) so every long
operation reports the same way.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TextIO

from imaging.units import human_duration, human_size


@dataclass(frozen=True)
class Progress:
    """One progress report. Byte counts are of the source (backup) or target (restore)."""

    phase: str
    done: int
    total: int
    elapsed: float
    rate: float = 0.0
    eta: float | None = None
    item: str = ""
    new_bytes: int = 0
    dedup_bytes: int = 0
    finished: bool = False
    extra: dict[str, int | float | str] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 1.0


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """A callback that ignores events."""


ETA_WINDOW = 5.0
"""Seconds of recent work the ETA is estimated from."""
ETA_AFTER = 1.0
"""No ETA before this many seconds of work: the first moments say little of the rest."""


class Meter:
    """Counts work done and reports it at most every ``interval`` seconds.

    ``rate`` is the average since the start; the ETA comes from the rate of the last
    :data:`ETA_WINDOW` seconds, so it follows a change of pace (a check that starts on
    cached lookups and goes on to the disk's) instead of growing for the whole run.
    Thread-safe: pipeline workers call :meth:`add` concurrently. ``clock`` is
    :func:`time.monotonic` but for tests of the arithmetic.
    """

    def __init__(
        self,
        phase: str,
        total: int,
        callback: ProgressCallback,
        *,
        item: str = "",
        interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.phase = phase
        self.total = total
        self.item = item
        self.callback = callback
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._recent: deque[tuple[float, int]] = deque([(self.started, 0)])
        self.done = 0
        self.new_bytes = 0
        self.dedup_bytes = 0
        self._last_report = 0.0
        self._lock = threading.Lock()

    def add(self, done: int, *, new_bytes: int = 0, dedup_bytes: int = 0) -> None:
        with self._lock:
            self.done += done
            self.new_bytes += new_bytes
            self.dedup_bytes += dedup_bytes
            now = self.clock()
            if now - self._last_report < self.interval:
                return
            self._last_report = now
            event = self._event(now, finished=False)
        self.callback(event)

    def set_item(self, item: str) -> None:
        with self._lock:
            self.item = item

    def finish(self) -> None:
        with self._lock:
            event = self._event(self.clock(), finished=True)
        self.callback(event)

    def _event(self, now: float, *, finished: bool) -> Progress:
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        recent = self._recent
        recent.append((now, self.done))
        while len(recent) > 2 and now - recent[1][0] >= ETA_WINDOW:
            recent.popleft()  # keep one sample at or before the window's start
        since, done_then = recent[0]
        pace = (self.done - done_then) / (now - since) if now > since else 0.0
        eta = None
        if not finished and elapsed >= ETA_AFTER and pace > 0:
            eta = (self.total - self.done) / pace
        return Progress(
            phase=self.phase,
            done=self.done,
            total=self.total,
            elapsed=elapsed,
            rate=rate,
            eta=eta,
            item=self.item,
            new_bytes=self.new_bytes,
            dedup_bytes=self.dedup_bytes,
            finished=finished,
        )


class JsonLinesProgress:
    """Writes each event as one JSON object per line (for automation)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def __call__(self, event: Progress) -> None:
        record = {"type": "progress", **asdict(event)}
        with self._lock:
            self.stream.write(json.dumps(record) + "\n")
            self.stream.flush()


class TerminalProgress:
    """A one-line bar with rate and ETA, redrawn in place on a terminal."""

    def __init__(self, stream: TextIO | None = None, width: int = 28) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self._lock = threading.Lock()
        self._drawn = False

    def __call__(self, event: Progress) -> None:
        filled = int(self.width * event.fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        eta = human_duration(event.eta) if event.eta is not None else "--:--"
        if event.finished:
            eta = human_duration(event.elapsed)
        parts = [
            f"{event.phase:<8}",
            f"[{bar}]",
            f"{event.fraction * 100:5.1f}%",
            f"{human_size(event.done)}/{human_size(event.total)}",
            f"{human_size(event.rate)}/s",
            eta,
        ]
        if event.item:
            parts.insert(1, event.item)
        line = " ".join(parts)
        with self._lock:
            self.stream.write("\r\x1b[K" + line + ("\n" if event.finished else ""))
            self.stream.flush()
            self._drawn = not event.finished


def reporter_for(mode: str, stream: TextIO | None = None) -> ProgressCallback:
    """``auto`` (a bar on a terminal, nothing otherwise), ``tty``, ``json`` or ``none``."""
    stream = stream or sys.stderr
    if mode == "json":
        return JsonLinesProgress(stream)
    if mode == "tty" or (mode == "auto" and stream.isatty()):
        return TerminalProgress(stream)
    return no_progress
