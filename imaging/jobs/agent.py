"""The agent as an operation: open the repository its configuration names, run, say how
it is (`hourglass agent`, `hourglass agent status`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imaging.agent.config import AgentConfig, load_config
from imaging.agent.run import Agent, read_status
from imaging.repository.leases import pid_alive
from imaging.repository.store import Repository

__all__ = [
    "AgentConfig",
    "AgentStatus",
    "OffsiteStatus",
    "agent_status",
    "load_config",
    "run_agent",
]


def open_repository(config: AgentConfig) -> Repository:
    return Repository.open(config.location, config.passphrase())


def run_agent(
    config: AgentConfig,
    *,
    once: bool = False,
    stop: threading.Event | None = None,
    on_ready: Callable[[], None] | None = None,
) -> Agent:
    """Run the agent in the foreground: one rescan pass and exit (``once``; ``stop`` ends
    its off-site copy early), or until ``stop`` is set."""
    agent = Agent(open_repository(config), config)
    if once:
        agent.once(stop)
    else:
        agent.run(stop or threading.Event(), on_ready)
    return agent


@dataclass(frozen=True)
class OffsiteStatus:
    """One off-site target, as the agent last saw it."""

    target: str
    last_success: float | None = None
    """When a pass last left the target with nothing to copy (seconds since the epoch)."""
    last_copy: float | None = None
    """When a pass last copied anything."""
    copied: tuple[str, ...] = ()
    """The snapshots that pass copied."""
    bytes_sent: int = 0
    behind: int | None = None
    """Snapshots of the repository the target lacks (None: not known yet)."""
    next_window: datetime | None = None
    """When the window opens, while it is closed."""
    last_error: str | None = None
    error_at: float | None = None
    copying: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "copying": self.copying,
            "last_success": self.last_success,
            "last_copy": self.last_copy,
            "copied": list(self.copied),
            "bytes_sent": self.bytes_sent,
            "behind": self.behind,
            "next_window": self.next_window.isoformat(timespec="seconds")
            if self.next_window
            else None,
            "last_error": self.last_error,
            "error_at": self.error_at,
        }


def _offsite_status(config: AgentConfig, records: Any, running: bool) -> tuple[OffsiteStatus, ...]:
    """Per target of the configuration: what the agent's state file says of it, with the
    window's next opening reckoned now."""
    by_target = {}
    for r in records if isinstance(records, list) else []:
        if isinstance(r, dict) and isinstance(r.get("target"), str):
            by_target[r["target"]] = r
    window = config.offsite.window
    now = datetime.now()
    opens = None if window is None or window.contains(now) else window.opens(now)
    result = []
    for target in config.offsite.targets:
        r = by_target.get(target.location, {})
        result.append(
            OffsiteStatus(
                target=target.location,
                last_success=_float(r.get("last_success")),
                last_copy=_float(r.get("last_copy")),
                copied=tuple(c for c in r.get("copied") or () if isinstance(c, str)),
                bytes_sent=int(r.get("bytes_sent") or 0),
                behind=r["behind"] if isinstance(r.get("behind"), int) else None,
                next_window=opens,
                last_error=r["last_error"] if isinstance(r.get("last_error"), str) else None,
                error_at=_float(r.get("error_at")),
                copying=bool(r.get("copying")) and running,
            )
        )
    return tuple(result)


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class AgentStatus:
    protect: tuple[str, ...]
    running: bool
    newest_ns: int
    """The newest recovery point (0: none yet)."""
    queue: int
    last_error: str | None
    gaps: int
    segments: int
    repository: str
    unresolved: int = 0
    """Events whose directory was gone before they were read (covered by its own event)."""
    offsite: tuple[OffsiteStatus, ...] = field(default_factory=tuple)

    @property
    def age(self) -> float | None:
        """Seconds since the newest recovery point."""
        return time.time() - self.newest_ns / 1e9 if self.newest_ns else None


def agent_status(config: AgentConfig) -> AgentStatus:
    """What the agent's state file says (written by the running agent every second)."""
    record = read_status(config.state_dir) or {}
    heartbeat = record.get("heartbeat")
    fresh = isinstance(heartbeat, int | float) and time.time() - heartbeat < 30
    running = isinstance(pid := record.get("pid"), int) and pid_alive(pid) and fresh
    return AgentStatus(
        protect=config.paths,
        running=running,
        newest_ns=int(record.get("newest_ns") or 0),  # type: ignore[call-overload]
        queue=int(record.get("queue") or 0),  # type: ignore[call-overload]
        last_error=record.get("last_error") if isinstance(record.get("last_error"), str) else None,  # type: ignore[arg-type]
        gaps=int(record.get("gaps") or 0),  # type: ignore[call-overload]
        segments=int(record.get("segments") or 0),  # type: ignore[call-overload]
        repository=config.location,
        unresolved=int(record.get("unresolved") or 0),  # type: ignore[call-overload]
        offsite=_offsite_status(config, record.get("offsite"), running),
    )
