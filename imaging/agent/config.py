"""The agent's configuration, `/etc/hourglass/agent.toml` (the keys are a contract)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imaging.errors import UsageError

DEFAULT_CONFIG = "/etc/hourglass/agent.toml"
DEFAULT_STATE_DIR = "/var/lib/hourglass/agent"


@dataclass(frozen=True)
class AgentConfig:
    location: str
    passphrase_file: str | None
    paths: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    interval: float = 5.0
    """At most one version of a file per this many seconds."""
    commit_interval: float = 1.0
    """A segment is committed at most this often while there are events."""
    settle: float = 0.2
    """How long after a close the copy waits (renames arrive as two events)."""
    state_dir: str = DEFAULT_STATE_DIR
    compact_after: float = 300.0
    """Segments that ended this many seconds ago are merged into compacted ones."""
    compact_every: float = 60.0
    """How often the running agent looks for segments to merge."""
    images: dict[str, Any] = field(default_factory=dict)
    offsite: dict[str, Any] = field(default_factory=dict)
    source: str = DEFAULT_CONFIG

    def passphrase(self) -> str | None:
        if self.passphrase_file is None:
            return None
        try:
            return Path(self.passphrase_file).read_text().rstrip("\n")
        except OSError as e:
            raise UsageError(
                f"Cannot read the passphrase file {self.passphrase_file}: {e.strerror}."
            ) from e


def _strs(value: Any, key: str, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{source}: {key} must be a list of strings.")
    return tuple(value)


def _number(
    table: dict[str, Any], key: str, default: float, source: str, name: str = "protect"
) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise UsageError(f"{source}: [{name}] {key} must be a number of seconds.")
    return float(value)


def load_config(path: str | None = None) -> AgentConfig:
    """Read the configuration file (``path``, else the default)."""
    source = path or DEFAULT_CONFIG
    try:
        with open(source, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(
            f"The agent's configuration {source} does not exist.",
            'It needs at least [repository] location = "..." and [protect] paths = [...].',
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{source} is not valid TOML: {e}.") from None
    repository = data.get("repository", {})
    protect = data.get("protect", {})
    location = repository.get("location")
    if not isinstance(location, str) or not location:
        raise UsageError(f'{source}: [repository] location = "..." is missing.')
    paths = _strs(protect.get("paths", []), "[protect] paths", source)
    if not paths:
        raise UsageError(f"{source}: [protect] paths names nothing to protect.")
    for p in paths:
        if not os.path.isabs(p):
            raise UsageError(f"{source}: [protect] paths: {p} is not an absolute path.")
    passphrase_file = repository.get("passphrase_file")
    agent = data.get("agent", {})
    return AgentConfig(
        location=location,
        passphrase_file=passphrase_file if isinstance(passphrase_file, str) else None,
        paths=tuple(os.path.normpath(p) for p in paths),
        exclude=_strs(protect.get("exclude", []), "[protect] exclude", source),
        interval=_number(protect, "interval", 5.0, source),
        commit_interval=_number(protect, "commit_interval", 1.0, source),
        settle=_number(protect, "settle", 0.2, source),
        state_dir=str(agent.get("state_dir", DEFAULT_STATE_DIR)),
        compact_after=_number(agent, "compact_after", 300.0, source, "agent"),
        compact_every=_number(agent, "compact_every", 60.0, source, "agent"),
        images=dict(data.get("images", {})),
        offsite=dict(data.get("offsite", {})),
        source=source,
    )
