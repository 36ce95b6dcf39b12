"""Choosing snapshots: ``latest``, an id or unique prefix, or "as of" a local second.

``2026-11-22 10:31:05`` (or ISO 8601, with or without a UTC offset) means the newest snapshot
taken at or before that second; a time without an offset is the machine's local time.
A selector may end in ``:N`` to name partition N of a disk snapshot.
"""

from __future__ import annotations

import re
from datetime import datetime

from imaging.errors import SnapshotNotFound, UsageError
from imaging.repository.store import Snapshot

_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}(:\d{2}(:\d{2})?)?)?([+-]\d{2}:?\d{2}|Z)?$")
_PART = re.compile(r"^(.*?):(\d+)$")


def split_partition(selector: str) -> tuple[str, int | None]:
    """``"latest:2"`` -> ``("latest", 2)``; a bare time's colons are not a partition."""
    m = _PART.match(selector)
    if m and not _TIME.match(selector):
        return m.group(1), int(m.group(2))
    return selector, None


def parse_time(text: str) -> datetime:
    """A point in time typed by a person; local time unless it carries an offset."""
    cleaned = text.strip().replace("Z", "+00:00")
    if not _TIME.match(text.strip()):
        raise UsageError(
            f"Cannot read {text!r} as a time.", "Write it as YYYY-MM-DD HH:MM:SS (local time)."
        )
    try:
        when = datetime.fromisoformat(cleaned)
    except ValueError as e:
        raise UsageError(f"{text!r} is not a valid date and time: {e}.") from None
    if when.tzinfo is None:
        when = when.astimezone()  # interpret as local time
    if len(cleaned) <= 10:  # a bare date means the end of that day
        when = when.replace(hour=23, minute=59, second=59)
    return when


def select(snapshots: list[Snapshot], selector: str, *, source: str | None = None) -> Snapshot:
    """The one snapshot ``selector`` names among ``snapshots`` (sorted oldest first)."""
    candidates = [s for s in snapshots if source is None or source in (s.source, s.source_id)]
    if source is not None and not candidates:
        raise SnapshotNotFound(f"No snapshot of the source {source}.")
    if not candidates:
        raise SnapshotNotFound("The repository holds no snapshots yet.")
    text = selector.strip()
    if text == "latest":
        return candidates[-1]
    if _TIME.match(text) and not re.fullmatch(r"[0-9a-f]{4,32}", text):
        when = parse_time(text)
        before = [s for s in candidates if s.time <= when]
        if not before:
            first = candidates[0].time.astimezone(when.tzinfo)
            raise SnapshotNotFound(
                f"No snapshot was taken at or before {when.strftime('%Y-%m-%d %H:%M:%S %z')}.",
                f"The oldest is from {first.strftime('%Y-%m-%d %H:%M:%S')}.",
            )
        return before[-1]
    if re.fullmatch(r"[0-9a-f]{1,32}", text):
        matches = [s for s in candidates if s.id.startswith(text)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(
                f"The id prefix {text} matches {len(matches)} snapshots.", "Type more of the id."
            )
    raise SnapshotNotFound(
        f"No snapshot matches {selector!r}.",
        "Use an id (or a unique prefix), 'latest', or a time like 2026-11-22 10:31:05.",
    )
