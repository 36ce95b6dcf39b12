"""What the person chose in the app (language, theme), kept on the backup drive.

The appliance runs from a read-only medium and forgets everything at shutdown, so what it
remembers lives on the drive that holds the repository, in a folder beside the repository:
``<drive>/hourglass/settings.json``, and the session logs in ``<drive>/hourglass/logs/``.
``<drive>`` is the mount point of the filesystem the repository is on.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path

from imaging.errors import HourglassError
from imaging.repository.fsutil import write_atomic

log = logging.getLogger(__name__)

FOLDER = "hourglass"
SETTINGS_FILE = "settings.json"
LOGS_FOLDER = "logs"
_WORD = re.compile(r"^[A-Za-z0-9_-]{0,32}$")


@dataclass(frozen=True)
class Settings:
    """The app's settings. An empty language means "as the system says" (``LANG``)."""

    language: str = ""
    theme: str = "dark"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> Settings:
        """Known keys with sensible values; anything else is ignored (a newer or damaged
        file must never stop the app from starting)."""
        if not isinstance(data, dict):
            return cls()
        values = {}
        for f in fields(cls):
            value = data.get(f.name)
            if isinstance(value, str) and _WORD.match(value):
                values[f.name] = value
        return cls(**values)


def drive_root(path: str | Path) -> Path:
    """The mount point of the filesystem ``path`` is on (the "drive" the person sees)."""
    current = Path(os.path.realpath(path))
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return current


def folder(drive: str | Path) -> Path:
    return Path(drive) / FOLDER


def load(drive: str | Path) -> Settings | None:
    """The settings saved on ``drive``; None when there are none (or they cannot be read)."""
    path = folder(drive) / SETTINGS_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("cannot read %s: %s", path, e.strerror)
        return None
    try:
        return Settings.from_dict(json.loads(raw))
    except (ValueError, UnicodeDecodeError):
        log.warning("%s is not valid JSON; using the defaults", path)
        return Settings()


def save(drive: str | Path, settings: Settings) -> Path:
    """Write ``settings`` to ``drive`` (atomically); returns the file's path."""
    target = folder(drive)
    path = target / SETTINGS_FILE
    try:
        target.mkdir(exist_ok=True)
        write_atomic(path, json.dumps(settings.as_dict(), indent=1).encode() + b"\n")
    except OSError as e:
        raise HourglassError(
            f"Cannot save the settings on {drive}: {e.strerror}.",
            "The drive may be read-only or full; the settings apply until the next start.",
        ) from e
    return path


def log_file(drive: str | Path, started: datetime) -> Path:
    """Where this session's log goes on ``drive`` (the folder is created)."""
    logs = folder(drive) / LOGS_FOLDER
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HourglassError(f"Cannot create {logs}: {e.strerror}.") from e
    return logs / f"hourglass-{started.strftime('%Y%m%d-%H%M%S')}.log"
