"""Retention policies: which snapshots ``forget --keep-*`` keeps (the restic/Borg rules).

Snapshots are grouped by source. Within a group, newest first, ``--keep-last N`` keeps the N
newest; ``--keep-hourly N`` keeps the newest snapshot of each of the N most recent hours that
have one; daily, weekly (ISO weeks) and monthly alike. A snapshot kept by any rule is kept.
Counts are whole numbers from 0 to ``MAX_KEEP``: a negative count would slice from the other
end (``--keep-last -1`` forgot the oldest) or keep nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from imaging.errors import UsageError
from imaging.repository.store import Snapshot

# More than anyone keeps (an hourly snapshot for eleven years); a larger count is a typing slip.
MAX_KEEP = 100_000
RULES = ("last", "hourly", "daily", "weekly", "monthly")


@dataclass(frozen=True)
class Policy:
    """How many snapshots each rule keeps; :class:`UsageError` for a count out of range."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    def __post_init__(self) -> None:
        for name in RULES:
            count = getattr(self, name)
            if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_KEEP:
                raise UsageError(
                    f"{count!r} is not a number of snapshots to keep (--keep-{name}).",
                    f"Give a whole number from 0 to {MAX_KEEP}; 0 means the rule keeps none.",
                )

    def empty(self) -> bool:
        return not any((self.last, self.hourly, self.daily, self.weekly, self.monthly))


@dataclass
class Decision:
    keep: list[tuple[Snapshot, list[str]]] = field(default_factory=list)
    remove: list[Snapshot] = field(default_factory=list)


def _buckets() -> list[tuple[str, Callable[[datetime], object]]]:
    return [
        ("hourly", lambda t: (t.year, t.month, t.day, t.hour)),
        ("daily", lambda t: (t.year, t.month, t.day)),
        ("weekly", lambda t: t.isocalendar()[:2]),
        ("monthly", lambda t: (t.year, t.month)),
    ]


def apply(snapshots: list[Snapshot], policy: Policy) -> Decision:
    """Split ``snapshots`` into kept (with the rules that keep each) and removed."""
    decision = Decision()
    groups: dict[str, list[Snapshot]] = {}
    for s in snapshots:
        if s.kind == "journal":
            continue  # never by a policy: the journal is forgotten with its compaction
        groups.setdefault(s.source_id, []).append(s)
    for group in groups.values():
        newest_first = sorted(group, key=lambda s: s.order, reverse=True)
        reasons: dict[str, list[str]] = {s.id: [] for s in newest_first}
        for s in newest_first[: policy.last]:
            reasons[s.id].append("last")
        for name, bucket_of in _buckets():
            wanted = getattr(policy, name)
            seen: set[object] = set()
            for s in newest_first:
                if len(seen) >= wanted:
                    break
                bucket = bucket_of(s.time)
                if bucket not in seen:
                    seen.add(bucket)
                    reasons[s.id].append(name)
        for s in newest_first:
            if reasons[s.id]:
                decision.keep.append((s, reasons[s.id]))
            else:
                decision.remove.append(s)
    return decision
