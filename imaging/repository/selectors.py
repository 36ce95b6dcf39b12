"""Choosing snapshots: ``latest``, an id or unique prefix, or "as of" a local second.

``2026-11-22 10:31:05`` (or ISO 8601, with or without a UTC offset) means the newest snapshot
taken at or before that second; a time without an offset is the machine's local time.
A selector may end in ``:N`` to name partition N of a disk snapshot.
"""

from __future__ import annotations

import re
from datetime import datetime

from imaging.errors import IntegrityError, SnapshotNotFound, UsageError
from imaging.repository.store import DamagedSnapshot, Snapshot, SnapshotList

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
    """The one snapshot ``selector`` names among ``snapshots`` (sorted oldest first).

    An id naming a damaged manifest (one of a :class:`SnapshotList`'s ``damaged``) raises
    :class:`IntegrityError` naming it; ``latest`` and times choose among intact snapshots.
    """
    found = find(snapshots, selector, source=source)
    if isinstance(found, DamagedSnapshot):
        raise IntegrityError(
            f"Snapshot {found.id}: {found.reason}",
            "It cannot be read. `hourglass forget " + found.id[:12] + "` removes it; "
            "the other snapshots are not affected.",
        )
    return found


def find(
    snapshots: list[Snapshot], selector: str, *, source: str | None = None
) -> Snapshot | DamagedSnapshot:
    """Like :func:`select`, but an id may name a damaged snapshot too (to forget it)."""
    damaged = list(snapshots.damaged) if isinstance(snapshots, SnapshotList) else []
    candidates = [s for s in snapshots if source is None or source in (s.source, s.source_id)]
    text = selector.strip()
    by_id = _by_id(candidates, damaged, text)
    if by_id is not None:
        return by_id
    if source is not None and not candidates:
        raise SnapshotNotFound(f"No snapshot of the source {source}.")
    if not candidates:
        if damaged:
            raise IntegrityError(
                f"Every snapshot in the repository is damaged ({len(damaged)}): "
                + "; ".join(d.describe() for d in damaged[:3]),
                "`hourglass snapshots` lists them; `hourglass forget ID` removes one.",
            )
        raise SnapshotNotFound("The repository holds no snapshots yet.")
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
    raise SnapshotNotFound(
        f"No snapshot matches {selector!r}.",
        "Use an id (or a unique prefix), 'latest', or a time like 2026-11-22 10:31:05.",
    )


def _by_id(
    candidates: list[Snapshot], damaged: list[DamagedSnapshot], text: str
) -> Snapshot | DamagedSnapshot | None:
    """The snapshot whose id starts with ``text``; None when ``text`` is no id or matches none."""
    if not is_id(text):
        return None
    matches: list[Snapshot | DamagedSnapshot] = [s for s in candidates if s.id.startswith(text)]
    matches += [d for d in damaged if d.id.startswith(text)]
    if len(matches) > 1:
        raise UsageError(
            f"The id prefix {text} matches {len(matches)} snapshots.", "Type more of the id."
        )
    return matches[0] if matches else None


def is_id(selector: str) -> bool:
    """Whether ``selector`` is an id or id prefix (not ``latest`` or a time)."""
    return re.fullmatch(r"[0-9a-f]{1,32}", selector.strip()) is not None


def damaged_after(snapshots: list[Snapshot], chosen: Snapshot) -> list[DamagedSnapshot]:
    """Damaged snapshots that may be newer than ``chosen``: "latest" or a time might have
    meant one of them (a damaged manifest's file was written after ``chosen`` started)."""
    damaged = snapshots.damaged if isinstance(snapshots, SnapshotList) else []
    return [d for d in damaged if d.written.timestamp() > started(chosen)]


def started(snapshot: Snapshot) -> float:
    """When the backup started, in seconds since the epoch, as precisely as recorded (the
    manifest's time is to the second; ``time_ns`` is exact)."""
    time_ns = snapshot.record.time_ns
    if time_ns is not None:
        return time_ns / 1e9
    return snapshot.time.timestamp()


def timeline(snapshots: list[Snapshot]) -> list[Snapshot | DamagedSnapshot]:
    """Intact and damaged snapshots in one list, oldest first: a damaged one where its
    manifest file's time puts it (its own time is lost)."""
    damaged = snapshots.damaged if isinstance(snapshots, SnapshotList) else []
    rows: list[tuple[float, Snapshot | DamagedSnapshot]] = [(started(s), s) for s in snapshots]
    rows += [(d.written.timestamp(), d) for d in damaged]
    rows.sort(key=lambda row: row[0])
    return [item for _, item in rows]
