"""Bandwidth limits by time of day (``--bwlimit``), and a store that keeps to them.

The timetable is rclone's ``--bwlimit`` syntax (fs/bwtimetable.go), the one users know:

- ``10M``: one limit all the time; ``off`` (or ``0``): no limit.
- ``"08:00,512k 18:00,10M 23:00,off"``: from each time of day on, that limit, until the
  next entry; the last entry of the day goes on past midnight to the first one.
- ``Mon-08:00,512k Sat-00:00,off``: the same by the week (``Mon``..``Sun`` or the whole
  names). An entry without a day holds for every day.
- A rate is a number with ``k``, ``M``, ``G`` (or ``KiB``, ``MiB``, ``GiB``, ``B``): KiB,
  MiB, GiB per second; a bare number is KiB/s, as in rclone. ``UP:DOWN`` gives uploads
  and downloads their own limit (``10M:off``).
- Entries are separated by spaces or semicolons.

The limiter is a token bucket per direction. Bytes are charged where the store moves them:
a chunk, index or manifest written (uploads), an object or a range read (downloads). An
object store sends chunks in packs (up to 64 MiB), so its link sees a pack at full speed
and then a pause: the limit is an average over a pack's time, not a ceiling at every
instant. The bucket holds up to :data:`BURST_BYTES` (or a second's worth, if more), so the
time a pack's upload takes is not lost from the average.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from imaging.errors import UsageError
from imaging.repository.leases import LeaseHandle
from imaging.repository.storage import Kind, Name, ObjectInfo, Store

KiB = 1024
# Enough credit to cover the upload of one pack (imaging.repository.s3store.PACK_BYTES):
# the average over many packs is then the limit, not the limit minus the upload pauses.
BURST_BYTES = 64 * 2**20
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MULTIPLIERS = {"": KiB, "b": 1, "k": KiB, "m": KiB**2, "g": KiB**3, "t": KiB**4}
_RATE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)([kmgt]?(?:ib)?|b)?$", re.IGNORECASE)
_TIME = re.compile(r"^(\d\d):(\d\d)$")
MINUTES_PER_WEEK = 7 * 24 * 60


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class Rate:
    """A limit in bytes per second for uploads and downloads (None: no limit)."""

    up: float | None
    down: float | None

    def of(self, direction: Direction) -> float | None:
        return self.up if direction is Direction.UP else self.down


UNLIMITED = Rate(None, None)


@dataclass(frozen=True)
class Slot:
    """From ``minute`` of the week on (0 = Monday 00:00), ``rate``."""

    minute: int
    rate: Rate


@dataclass(frozen=True)
class Timetable:
    """The limits by the minute of the week; :meth:`at` the one in force."""

    slots: tuple[Slot, ...]
    text: str

    def at(self, moment: datetime | None = None) -> Rate:
        """The limit at ``moment`` (local time; default now)."""
        if not self.slots:
            return UNLIMITED
        moment = moment or datetime.now()
        minute = moment.weekday() * 24 * 60 + moment.hour * 60 + moment.minute
        current = self.slots[-1]  # before the week's first entry: the week's last goes on
        for slot in self.slots:
            if slot.minute <= minute:
                current = slot
        return current.rate

    @property
    def limited(self) -> bool:
        return any(s.rate != UNLIMITED for s in self.slots)

    def __str__(self) -> str:
        return self.text


def parse_rate(text: str) -> float | None:
    """Bytes per second of one rate (``512k``, ``10M``, ``1.5G``, ``100``: KiB/s); None for
    ``off`` or 0 (no limit). ValueError for anything else."""
    if text.lower() == "off":
        return None
    match = _RATE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a rate")
    number, suffix = match.groups()
    suffix = (suffix or "").lower()
    if suffix.endswith("ib"):
        suffix = suffix[:-2]
        if not suffix:
            raise ValueError(f"{text!r} is not a rate")
    value = float(number) * _MULTIPLIERS[suffix]
    return value if value > 0 else None


def _parse_pair(text: str) -> Rate:
    up, sep, down = text.partition(":")
    if sep and (not up or not down):
        raise ValueError(f"{text!r} is not a rate or UP:DOWN pair")
    upload = parse_rate(up)
    return Rate(upload, parse_rate(down) if sep else upload)


def _parse_weekday(text: str) -> int:
    lower = text.lower()
    if lower in _WEEKDAYS:
        return _WEEKDAYS.index(lower)
    if lower in _FULL_WEEKDAYS:
        return _FULL_WEEKDAYS.index(lower)
    raise ValueError(f"{text!r} is not a day of the week (Mon..Sun)")


def parse_time(text: str) -> int:
    """Minutes since midnight of ``HH:MM`` (00:00 to 23:59); ValueError otherwise."""
    match = _TIME.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time of day (HH:MM)")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if hours > 23 or minutes > 59:
        raise ValueError(f"{text!r} is not a time of day (00:00 to 23:59)")
    return hours * 60 + minutes


def parse_timetable(text: str) -> Timetable:
    """rclone's ``--bwlimit`` timetable (module docstring); :class:`UsageError` naming the
    entry that is wrong."""
    hint = 'A limit is "10M", or times and limits: "08:00,512k 18:00,10M 23:00,off" (rclone).'
    text = text.strip()
    if not text:
        raise UsageError("--bwlimit is empty.", hint)
    if " " not in text and ";" not in text and "," not in text:
        try:
            return Timetable((Slot(0, _parse_pair(text)),), text)
        except ValueError as e:
            raise UsageError(f"--bwlimit {text!r}: {e}.", hint) from None
    slots: dict[int, Rate] = {}
    for entry in re.split(r"[ ;]+", text):
        if not entry:
            continue
        try:
            when, comma, rate_text = entry.partition(",")
            if not comma or "," in rate_text:
                raise ValueError("an entry is TIME,RATE or DAY-TIME,RATE")
            rate = _parse_pair(rate_text)
            day, dash, clock = when.rpartition("-")
            minute = parse_time(clock)
            days = [_parse_weekday(day)] if dash else list(range(7))
        except ValueError as e:
            raise UsageError(f"--bwlimit entry {entry!r}: {e}.", hint) from None
        for weekday in days:
            slots[weekday * 24 * 60 + minute] = rate
    ordered = tuple(Slot(minute, rate) for minute, rate in sorted(slots.items()))
    return Timetable(ordered, text)


class Limiter:
    """A token bucket per direction whose rate follows a :class:`Timetable`; thread-safe.
    The buckets start empty: a copy never opens with a burst above the limit."""

    def __init__(
        self,
        timetable: Timetable,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.timetable = timetable
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # Per direction: the time at which the bytes charged so far have been "paid for";
        # set by the first transfer, so that opening a repository earns no credit.
        self._paid: dict[Direction, float] = {}

    def take(self, count: int, direction: Direction) -> None:
        """Wait until ``count`` bytes may move in ``direction``."""
        if count <= 0:
            return
        rate = self.timetable.at().of(direction)
        with self._lock:
            now = self._clock()
            if rate is None:
                self._paid[direction] = now
                return
            burst = max(BURST_BYTES, rate) / rate
            paid = max(self._paid.get(direction, now), now - burst) + count / rate
            self._paid[direction] = paid
        # Sleep in steps, so that a change of the timetable's limit is seen within a minute.
        while (wait := paid - self._clock()) > 0:
            self._sleep(min(wait, 60.0))


class ThrottledStore(Store):
    """A store whose transfers keep to a :class:`Limiter`: uploads (``put``,
    ``put_chunk``) and downloads (``get``, ``get_range``, ``get_set_aside``) are charged,
    everything else is the inner store's."""

    def __init__(self, inner: Store, limiter: Limiter) -> None:
        self.inner = inner
        self.limiter = limiter

    def __repr__(self) -> str:
        return f"ThrottledStore({self.inner!r}, {self.limiter.timetable.text!r})"

    def unwrapped(self) -> Store:
        return self.inner.unwrapped()

    # --- charged ----------------------------------------------------------------------------

    def put(self, name: Name, *parts: bytes | bytearray, if_absent: bool = False) -> bool:
        self.limiter.take(sum(len(p) for p in parts), Direction.UP)
        return self.inner.put(name, *parts, if_absent=if_absent)

    def put_chunk(self, chunk_id: bytes, data: bytes) -> bool:
        # Charged after the put, and only when the chunk was new: no lookup per chunk on the
        # backup's hot path, and the average over the run is the same.
        stored = self.inner.put_chunk(chunk_id, data)
        if stored:
            self.limiter.take(len(data), Direction.UP)
        return stored

    def get(self, name: Name) -> bytes:
        data = self.inner.get(name)
        self.limiter.take(len(data), Direction.DOWN)
        return data

    def get_range(self, name: Name, offset: int, length: int) -> bytes:
        data = self.inner.get_range(name, offset, length)
        self.limiter.take(len(data), Direction.DOWN)
        return data

    def get_set_aside(self, name: Name) -> bytes:
        data = self.inner.get_set_aside(name)
        self.limiter.take(len(data), Direction.DOWN)
        return data

    # --- delegated --------------------------------------------------------------------------

    def describe(self, what: Name | Kind | None = None) -> str:
        return self.inner.describe(what)

    @property
    def local_path(self) -> Path | None:
        return self.inner.local_path

    @property
    def local_paths(self) -> tuple[Path, ...]:
        return self.inner.local_paths

    def lease(self, kind: str) -> contextlib.AbstractContextManager[LeaseHandle]:
        return self.inner.lease(kind)

    def degraded(self) -> Sequence[str]:
        return self.inner.degraded()

    def reachable(self) -> bool:
        return self.inner.reachable()

    def create(self, kinds: Iterable[Kind]) -> None:
        self.inner.create(kinds)

    def has_kind(self, kind: Kind) -> bool:
        return self.inner.has_kind(kind)

    def stat(self, name: Name) -> ObjectInfo:
        return self.inner.stat(name)

    def size(self, name: Name) -> int:
        return self.inner.size(name)

    def exists(self, name: Name) -> bool:
        return self.inner.exists(name)

    def list(self, kind: Kind, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(kind, prefix)

    def delete(self, name: Name, *, durable: bool = True) -> bool:
        return self.inner.delete(name, durable=durable)

    def move(
        self, source: Name, dest: Name, *, if_absent: bool = False, durable: bool = False
    ) -> bool:
        return self.inner.move(source, dest, if_absent=if_absent, durable=durable)

    def groups(self, kind: Kind) -> Iterator[ObjectInfo]:
        return self.inner.groups(kind)

    def make_group(self, kind: Kind, group: str) -> None:
        self.inner.make_group(kind, group)

    def delete_group(self, kind: Kind, group: str) -> None:
        self.inner.delete_group(kind, group)

    def flush_chunks(self) -> None:
        self.inner.flush_chunks()

    def discard_chunks(self) -> None:
        self.inner.discard_chunks()

    def sync_chunks(self) -> None:
        self.inner.sync_chunks()


def throttled(store: Store, bwlimit: str | Timetable | None) -> Store:
    """``store`` kept to ``bwlimit`` (a timetable or its text); ``store`` itself without one
    or when the timetable never limits."""
    if bwlimit is None:
        return store
    timetable = parse_timetable(bwlimit) if isinstance(bwlimit, str) else bwlimit
    if not timetable.limited:
        return store
    return ThrottledStore(store, Limiter(timetable))


# --- idle windows (``--window 22:00-06:00``) ----------------------------------------------

_CLOCK = re.compile(r"^(\d\d):(\d\d)(?::(\d\d))?$")
DAY = 24 * 3600


@dataclass(frozen=True)
class Window:
    """A daily window of local time, ``start`` to ``end`` in seconds since midnight; it may
    run past midnight (22:00-06:00)."""

    start: int
    end: int
    text: str

    def _offset(self, moment: datetime) -> int:
        """Seconds since the window's start (0 <= result < a day)."""
        seconds = moment.hour * 3600 + moment.minute * 60 + moment.second
        return (seconds - self.start) % DAY

    @property
    def length(self) -> int:
        return (self.end - self.start) % DAY

    def contains(self, moment: datetime) -> bool:
        return self._offset(moment) < self.length

    def opens(self, moment: datetime) -> datetime:
        """When the window is next open: ``moment`` itself if it is open now."""
        if self.contains(moment):
            return moment
        wait = DAY - self._offset(moment)
        return (moment + timedelta(seconds=wait)).replace(microsecond=0)

    def closes(self, moment: datetime) -> datetime:
        """The end of the window open at ``moment`` (or of the next one)."""
        start = self.opens(moment)
        left = self.length - self._offset(start)
        return (start + timedelta(seconds=left)).replace(microsecond=0)

    def __str__(self) -> str:
        return self.text


def _clock_seconds(text: str) -> int:
    match = _CLOCK.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time of day (HH:MM)")
    hours, minutes, seconds = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f"{text!r} is not a time of day (00:00 to 23:59)")
    return hours * 3600 + minutes * 60 + seconds


def parse_window(text: str) -> Window:
    """``HH:MM-HH:MM`` (local time; seconds allowed: ``HH:MM:SS``); :class:`UsageError`
    for anything else, or a window that is empty."""
    hint = "A window is START-END in local time, e.g. 22:00-06:00 (it may pass midnight)."
    start_text, dash, end_text = text.strip().partition("-")
    try:
        if not dash:
            raise ValueError("it has no '-' between start and end")
        start, end = _clock_seconds(start_text), _clock_seconds(end_text)
    except ValueError as e:
        raise UsageError(f"--window {text!r}: {e}.", hint) from None
    if start == end:
        raise UsageError(f"--window {text!r} starts where it ends.", hint)
    return Window(start, end, text.strip())
