"""Retention policies: which snapshots ``forget --keep-*`` keeps (the restic/Borg rules).

Snapshots are grouped by source. Within a group, newest first, ``--keep-last N`` keeps the N
newest; ``--keep-hourly N`` keeps the newest snapshot of each of the N most recent hours that
have one; daily, weekly (ISO weeks) and monthly alike. A snapshot kept by any rule is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from imaging.repository.store import Snapshot


@dataclass(frozen=True)
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

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
