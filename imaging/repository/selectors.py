"""Choosing snapshots: ``latest``, an id or unique prefix, or "as of" a local second.

``2026-11-22 10:31:05`` or ``2026-11-22 10:31`` (also with ``T``, with or without a UTC
offset) means the newest snapshot taken at or before that moment; a time without an offset
is the machine's local time, a bare date the end of that day.

A selector may end in ``@N`` to name partition N of a disk snapshot; ``:N`` too where it
cannot be part of a time: after ``latest``, an id or prefix, or a time with its seconds
(``latest:2``, ``3f2a9c:2``, ``2026-11-22 10:31:05:2``). ``2026-11-22 10:31:5`` is no time and
no partition: it is refused, with the forms a time takes.
"""

from __future__ import annotations

import re
from datetime import datetime

from imaging.errors import IntegrityError, SnapshotNotFound, UsageError
from imaging.repository.store import DamagedSnapshot, Snapshot, SnapshotList

_OFFSET = r"([+-]\d{2}:?\d{2}|Z)?"
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?" + _OFFSET + "$")
_TIME_TO_THE_SECOND = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}" + _OFFSET + "$")
_LOOKS_LIKE_TIME = re.compile(r"^\d{4}-\d")
_PART_AT = re.compile(r"^(.*?)\s*@(\d+)$")
_PART = re.compile(r"^(.*):(\d+)$")
TIME_FORMS = "YYYY-MM-DD HH:MM:SS, YYYY-MM-DD HH:MM or YYYY-MM-DD (local time; T for the space)"


def split_partition(selector: str) -> tuple[str, int | None]:
    """``"latest@2"`` and ``"latest:2"`` -> ``("latest", 2)``; a colon that may belong to a
    time is never a partition (module docstring)."""
    text = selector.strip()
    m = _PART_AT.match(text)
    if m:
        return m.group(1), int(m.group(2))
    m = _PART.match(text)
    if m and (m.group(1) == "latest" or is_id(m.group(1)) or _TIME_TO_THE_SECOND.match(m.group(1))):
        return m.group(1), int(m.group(2))
    return text, None


def is_time_to_the_second(text: str) -> bool:
    """``text`` names a second (``YYYY-MM-DD HH:MM:SS``, optionally with T and an offset)."""
    return bool(_TIME_TO_THE_SECOND.match(text.strip()))


def parse_time(text: str) -> datetime:
    """A point in time typed by a person; local time unless it carries an offset."""
    cleaned = text.strip().replace("Z", "+00:00")
    if not _TIME.match(text.strip()):
        raise UsageError(f"Cannot read {text!r} as a time.", f"A time is written {TIME_FORMS}.")
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
    # A journal segment is not an image: it is never chosen as one (FORMAT.md, "File journal").
    candidates = [
        s
        for s in snapshots
        if s.kind != "journal" and (source is None or source in (s.source, s.source_id))
    ]
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
        if any(s.kind == "journal" for s in snapshots):
            raise SnapshotNotFound(
                "The repository holds no disk or partition images yet, only the file journal.",
                'Its files are restored with `hourglass files restore --at "TIME" PATH...`.',
            )
        raise SnapshotNotFound("The repository holds no snapshots yet.")
    if text == "latest":
        return candidates[-1]
    if _LOOKS_LIKE_TIME.match(text) and not _TIME.match(text):
        raise UsageError(
            f"Cannot read {selector!r} as a time: a time is written {TIME_FORMS}.",
            _nearest(candidates),
        )
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
        "Name one by 'latest', by a time like 2026-11-22 10:31:05, or by its id from "
        f"`hourglass snapshots`. {_nearest(candidates)}",
    )


def _nearest(candidates: list[Snapshot]) -> str:
    """The newest snapshots' times, for a person who mistyped one."""
    newest = [s.time.strftime("%Y-%m-%d %H:%M:%S") for s in candidates[-3:]]
    return "The newest snapshots are from " + ", ".join(reversed(newest)) + "."


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
