"""Messages shared by screens and widgets, and the relay that turns the engine's progress
callbacks (called from worker threads) into messages."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message
from textual.message_pump import MessagePump

if TYPE_CHECKING:
    from imaging.progress import Progress


@dataclass
class DiskEvent(Message):
    """A disk or partition appeared or went (from the disk watcher's thread)."""

    action: str  # "add" or "remove"
    device: str


@dataclass
class LogLine(Message):
    """One new line of the session log."""

    text: str


class ProgressRelay:
    """The engine's progress callback for one piece of work.

    Events arrive from worker threads many times a second; the screen wants only the newest.
    At most one :class:`ProgressRelay.Updated` message is queued at a time and the handler
    takes the newest event when it runs, so repeated progress replaces rather than queues
    (the way Toolong does it).
    """

    @dataclass
    class Updated(Message):
        relay: ProgressRelay

    def __init__(self, target: MessagePump, name: str = "") -> None:
        self.target = target
        self.name = name
        self._lock = threading.Lock()
        self._latest: Progress | None = None
        self._pending = False
        self.events = 0

    def __call__(self, event: Progress) -> None:
        with self._lock:
            self._latest = event
            self.events += 1
            if self._pending:
                return
            self._pending = True
        self.target.post_message(ProgressRelay.Updated(self))

    def take(self) -> Progress | None:
        """The newest event not yet taken (None if there is none)."""
        with self._lock:
            event, self._latest = self._latest, None
            self._pending = False
        return event
