"""Retention policies keep what restic and Borg users expect."""

from __future__ import annotations

from datetime import datetime, timedelta

from imaging.repository.records import Manifest
from imaging.repository.retention import Policy, apply
from imaging.repository.store import Snapshot

START = datetime.fromisoformat("2026-01-01T00:30:00+00:00")


def hourly_snapshots(hours: int, source: str = "disk:a") -> list[Snapshot]:
    return [
        Snapshot(
            Manifest(
                id=f"{i:032x}",
                time=(START + timedelta(hours=i)).isoformat(),
                source="/dev/sda",
                source_id=source,
                kind="disk",
                size=0,
                images=(),
            )
        )
        for i in range(hours)
    ]


def kept_ids(snaps: list[Snapshot], policy: Policy) -> set[int]:
    return {int(s.id, 16) for s, _ in apply(snaps, policy).keep}


def test_keep_last() -> None:
    assert kept_ids(hourly_snapshots(10), Policy(last=3)) == {7, 8, 9}


def test_keep_daily_keeps_newest_of_each_day() -> None:
    snaps = hourly_snapshots(24 * 5)
    assert kept_ids(snaps, Policy(daily=3)) == {24 * 5 - 1, 24 * 4 - 1, 24 * 3 - 1}


def test_rules_combine_and_reasons_are_given() -> None:
    snaps = hourly_snapshots(24 * 3)
    decision = apply(snaps, Policy(last=2, daily=3))
    reasons = {int(s.id, 16): r for s, r in decision.keep}
    assert reasons[71] == ["last", "daily"]
    assert reasons[70] == ["last"]
    assert reasons[47] == ["daily"]
    assert len(decision.remove) == 72 - 4


def test_weekly_and_monthly() -> None:
    snaps = hourly_snapshots(24 * 70)  # 70 days from 1 January
    monthly = kept_ids(snaps, Policy(monthly=12))
    assert len(monthly) == 3  # January, February, March
    weekly = kept_ids(snaps, Policy(weekly=4))
    assert len(weekly) == 4


def test_groups_by_source() -> None:
    snaps = hourly_snapshots(5, "disk:a") + hourly_snapshots(5, "disk:b")
    decision = apply(snaps, Policy(last=1))
    assert len(decision.keep) == 2
    assert {s.source_id for s, _ in decision.keep} == {"disk:a", "disk:b"}
