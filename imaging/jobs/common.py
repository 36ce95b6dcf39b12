"""What every operation shares: choosing a snapshot, and asking before destroying."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from imaging.errors import UsageError
from imaging.repository import selectors
from imaging.repository.store import Repository, Snapshot, SnapshotList
from imaging.repository.throttle import Window

P = TypeVar("P")
# Called with what an operation is about to destroy; returns to go on, raises
# :class:`imaging.errors.Cancelled` to stop with nothing changed.
Confirm = Callable[[P], None]
# Called with a line a person should see while the operation runs (waiting for a window).
Say = Callable[[str], None]
Clock = Callable[[], datetime]


def no_say(_: str) -> None:
    """For callers that show nothing but the result."""


def now() -> datetime:
    """Local time, as windows are given in."""
    return datetime.now()


def wait_for_window(window: Window, *, say: Say = no_say, clock: Clock = now) -> float:
    """Sleep until ``window`` is open, saying until when; the seconds waited."""
    opens = window.opens(clock())
    if opens <= clock():
        return 0.0
    say(
        f"Outside the window {window}: waiting until {opens.strftime('%Y-%m-%d %H:%M:%S')} "
        "to start."
    )
    started = time.monotonic()
    while (left := (window.opens(clock()) - clock()).total_seconds()) > 0:
        time.sleep(min(left, 30.0))
    return time.monotonic() - started


def parse_time(text: str) -> datetime:
    """A point in time typed by a person (local time unless it carries an offset)."""
    return selectors.parse_time(text)


def is_time_to_the_second(text: str) -> bool:
    """``text`` names a second (a restore as of it replays the file journal)."""
    return selectors.is_time_to_the_second(text)


def select(snapshots: list[Snapshot], selector: str, *, source: str | None = None) -> Snapshot:
    """The snapshot ``selector`` names among ``snapshots`` already listed (oldest first)."""
    return selectors.select(snapshots, selector, source=source)


def no_confirm(_: object) -> None:
    """For callers that asked already (the app's typed confirmation) or run unattended."""


@dataclass(frozen=True)
class Chosen:
    """A snapshot chosen by a selector, and what a person should know about the choice."""

    snapshot: Snapshot
    partition: int | None
    listed: SnapshotList
    warnings: list[str] = field(default_factory=list)


def choose_snapshot(
    repo: Repository,
    selector: str,
    *,
    source: str | None = None,
    partition: int | None = None,
    listed: SnapshotList | None = None,
) -> Chosen:
    """The snapshot ``selector`` names (``latest``, an id or prefix, a local time, each with
    an optional ``:N`` partition, or ``partition``), warning when ``latest`` or a time may
    have meant a snapshot whose manifest is damaged (newer than the one chosen)."""
    selector, from_selector = selectors.split_partition(selector)
    if partition is not None and from_selector is not None and partition != from_selector:
        raise UsageError(f"Two different partitions were named: {from_selector} and {partition}.")
    if from_selector is not None:
        partition = from_selector
    listed = listed if listed is not None else repo.snapshots()
    snapshot = selectors.select(listed, selector, source=source)
    warnings = []
    if not selectors.is_id(selector):
        for d in selectors.damaged_after(listed, snapshot):
            warnings.append(
                f"{d.describe()} It was written {d.written.strftime('%Y-%m-%d %H:%M:%S')} and "
                f"may be newer than snapshot {snapshot.id[:12]} "
                f"({snapshot.time.strftime('%Y-%m-%d %H:%M:%S')}), which is the one used."
            )
    return Chosen(snapshot, partition, listed, warnings)
