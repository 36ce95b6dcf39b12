"""The session's log: kept in memory for the Logs screen and written to the backup drive.

Everything the engine and the app log at INFO and above lands here, with full tracebacks
for failures. Secrets are never logged: the app never passes a passphrase, password or
recovery key to a log call.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO

LOGGERS = ("imaging", "recovery_ui")
MAX_LINES = 5000
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

Listener = Callable[[str], None]


class SessionLog(logging.Handler):
    """A log handler that keeps the lines, tells listeners, and copies them to a file."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S"))
        self.started = datetime.now().astimezone().replace(microsecond=0)
        self.lines: deque[str] = deque(maxlen=MAX_LINES)
        self.path: Path | None = None
        self._file: TextIO | None = None
        self._listeners: list[Listener] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        with self._guard:
            self.lines.append(text)
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.write(text + "\n")
                    self._file.flush()
            listeners = list(self._listeners)
        for listener in listeners:
            listener(text)

    def listen(self, listener: Listener) -> None:
        with self._guard:
            self._listeners.append(listener)

    def forget(self, listener: Listener) -> None:
        with self._guard:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def write_to(self, path: Path) -> None:
        """From now on also append to ``path``, starting with everything logged so far."""
        with self._guard:
            if self.path == path:
                return
            handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
            handle.writelines(line + "\n" for line in self.lines)
            handle.flush()
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
            self._file, self.path = handle, path

    def stop_writing(self) -> None:
        """Stop copying to the file (its drive went): the lines are still kept."""
        with self._guard:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
            self._file, self.path = None, None

    def close(self) -> None:
        with self._guard:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
        super().close()


def install() -> SessionLog:
    """Send the engine's and the app's logging to a new :class:`SessionLog`."""
    handler = SessionLog()
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
    return handler


def uninstall(handler: SessionLog) -> None:
    for name in LOGGERS:
        logging.getLogger(name).removeHandler(handler)
    handler.close()
