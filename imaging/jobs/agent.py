"""The agent as an operation: open the repository its configuration names, run, say how
it is (`hourglass agent`, `hourglass agent status`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from imaging.agent.config import AgentConfig, load_config
from imaging.agent.run import Agent, read_status
from imaging.repository.leases import pid_alive
from imaging.repository.store import Repository

__all__ = ["AgentConfig", "AgentStatus", "agent_status", "load_config", "run_agent"]


def open_repository(config: AgentConfig) -> Repository:
    return Repository.open(config.location, config.passphrase())


def run_agent(
    config: AgentConfig,
    *,
    once: bool = False,
    stop: threading.Event | None = None,
    on_ready: Callable[[], None] | None = None,
) -> Agent:
    """Run the agent in the foreground: one rescan pass and exit (``once``), or until
    ``stop`` is set."""
    agent = Agent(open_repository(config), config)
    if once:
        agent.once()
    else:
        agent.run(stop or threading.Event(), on_ready)
    return agent


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

    @property
    def age(self) -> float | None:
        """Seconds since the newest recovery point."""
        return time.time() - self.newest_ns / 1e9 if self.newest_ns else None


def agent_status(config: AgentConfig) -> AgentStatus:
    """What the agent's state file says (written by the running agent every second)."""
    record = read_status(config.state_dir) or {}
    heartbeat = record.get("heartbeat")
    fresh = isinstance(heartbeat, int | float) and time.time() - heartbeat < 30
    return AgentStatus(
        protect=config.paths,
        running=isinstance(pid := record.get("pid"), int) and pid_alive(pid) and fresh,
        newest_ns=int(record.get("newest_ns") or 0),  # type: ignore[call-overload]
        queue=int(record.get("queue") or 0),  # type: ignore[call-overload]
        last_error=record.get("last_error") if isinstance(record.get("last_error"), str) else None,  # type: ignore[arg-type]
        gaps=int(record.get("gaps") or 0),  # type: ignore[call-overload]
        segments=int(record.get("segments") or 0),  # type: ignore[call-overload]
        repository=config.location,
        unresolved=int(record.get("unresolved") or 0),  # type: ignore[call-overload]
    )
