"""Choosing snapshots by id, prefix, 'latest' and "as of" a local second."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from imaging.errors import SnapshotNotFound, UsageError
from imaging.image.backup import backup_path
from imaging.repository.records import Manifest
from imaging.repository.selectors import parse_time, select, split_partition
from imaging.repository.store import Repository, Snapshot

TZ = timezone(timedelta(hours=1))


def snap(snapshot_id: str, when: str, source: str = "disk:a") -> Snapshot:
    return Snapshot(
        Manifest(
            id=snapshot_id,
            time=when,
            source="/dev/sda",
            source_id=source,
            kind="disk",
            size=0,
            images=(),
        )
    )


SNAPS = [
    snap("aa" * 16, "2026-11-22T10:31:05+01:00"),
    snap("ab" * 16, "2026-11-22T10:31:06+01:00"),
    snap("cd" * 16, "2026-11-23T08:00:00+01:00", source="disk:b"),
]


def test_latest_and_ids() -> None:
    assert select(SNAPS, "latest").id == "cd" * 16
    assert select(SNAPS, "latest", source="disk:a").id == "ab" * 16
    assert select(SNAPS, "cd").id == "cd" * 16
    assert select(SNAPS, "ab" * 16).id == "ab" * 16


def test_ambiguous_prefix() -> None:
    with pytest.raises(UsageError, match="matches 2"):
        select(SNAPS, "a")


def test_as_of_a_second() -> None:
    assert select(SNAPS, "2026-11-22T10:31:05+01:00").id == "aa" * 16
    assert select(SNAPS, "2026-11-22T09:31:06Z").id == "ab" * 16
    assert select(SNAPS, "2026-11-22 10:31:05.5+01:00".replace(".5", "")).id == "aa" * 16
    with pytest.raises(SnapshotNotFound, match="oldest is from"):
        select(SNAPS, "2026-11-22T10:31:04+01:00")


def test_local_time_is_local(monkeypatch: pytest.MonkeyPatch) -> None:
    when = parse_time("2026-11-22 10:31:05")
    assert when.tzinfo is not None
    assert when.replace(tzinfo=None) == datetime(2026, 11, 22, 10, 31, 5)


def test_bare_date_means_end_of_day() -> None:
    assert select(SNAPS, "2026-11-22").id == "ab" * 16


def test_unknown_and_bad() -> None:
    with pytest.raises(SnapshotNotFound):
        select(SNAPS, "ff")
    with pytest.raises(SnapshotNotFound):
        select(SNAPS, "yesterday")
    with pytest.raises(SnapshotNotFound, match="no snapshots"):
        select([], "latest")
    with pytest.raises(UsageError):
        parse_time("2026-13-45 10:00:00")


def test_partition_suffix() -> None:
    assert split_partition("latest:2") == ("latest", 2)
    assert split_partition("abc123:10") == ("abc123", 10)
    assert split_partition("2026-11-22 10:31:05") == ("2026-11-22 10:31:05", None)
    assert split_partition("2026-11-22 10:31:05:3") == ("2026-11-22 10:31:05", 3)
    assert split_partition("2026-11-22T10:31:05+01:00") == ("2026-11-22T10:31:05+01:00", None)
    assert split_partition("latest@2") == ("latest", 2)
    assert split_partition("2026-11-22 10:31@3") == ("2026-11-22 10:31", 3)
    assert split_partition("2026-11-22 10:31 @3") == ("2026-11-22 10:31", 3)
    # a colon that may be part of the time is never a partition (issue 22, item 8)
    assert split_partition("2026-12-01 19:1") == ("2026-12-01 19:1", None)
    assert split_partition("2026-12-01 18:2300") == ("2026-12-01 18:2300", None)
    assert split_partition("2026-11-22 10:31") == ("2026-11-22 10:31", None)


@pytest.mark.parametrize(
    "typed", ["2026-12-01 18:23:0O", "2026-12-01 19:1", "2026-12-01 18:2300", "2026-12-01 18"]
)
def test_a_mistyped_time_is_refused_with_the_forms_and_the_nearest(typed: str) -> None:
    with pytest.raises(UsageError) as raised:
        select(SNAPS, typed)
    assert "YYYY-MM-DD HH:MM:SS" in raised.value.message
    assert "2026-11-22 10:31:05" in (raised.value.hint or "")  # a snapshot's time


def test_minutes_are_enough() -> None:
    assert select(SNAPS, "2026-11-22 10:31").id == select(SNAPS, "2026-11-22 10:31:00").id


def test_two_backups_within_one_second_keep_their_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fast backups can start within one second: the one started later is "latest" and comes
    after the other in the listing, whatever their random ids."""
    import imaging.image.backup

    repo = Repository.init(tmp_path / "repo", encryption="none")
    source = tmp_path / "source.img"
    second = datetime(2026, 11, 23, 18, 13, 55, tzinfo=TZ)
    monkeypatch.setattr(imaging.image.backup, "local_now", lambda: second)  # both in that second
    taken = []
    for round_ in range(6):
        source.write_bytes(bytes([round_ + 1]) * 4096)
        taken.append(backup_path(repo, source).id)
    listed = repo.snapshots()
    assert [s.id for s in listed] == taken
    assert select(listed, "latest").id == taken[-1]
    as_of = second.astimezone().strftime("%Y-%m-%d %H:%M:%S")  # "as of" is local time
    assert select(listed, as_of).id == taken[-1]
