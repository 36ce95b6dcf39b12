"""--bwlimit timetables (rclone's grammar), --window, the token bucket and the store that
keeps to it."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from imaging.errors import UsageError
from imaging.repository import storage
from imaging.repository.storage import LocalStore
from imaging.repository.throttle import (
    Direction,
    Limiter,
    Rate,
    ThrottledStore,
    parse_rate,
    parse_timetable,
    parse_window,
    throttled,
)

KiB = 1024
MiB = 1024 * KiB
# 2026-11-30 is a Monday.
MONDAY = datetime(2026, 11, 30)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """Day 0 = Monday of that week."""
    return MONDAY + timedelta(days=day, hours=hour, minutes=minute)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512k", 512 * KiB),
        ("512K", 512 * KiB),
        ("10M", 10 * MiB),
        ("10MiB", 10 * MiB),
        ("1.5G", 1.5 * 1024 * MiB),
        ("100", 100 * KiB),  # a bare number is KiB/s, as in rclone
        ("100B", 100),
        ("off", None),
        ("OFF", None),
        ("0", None),
    ],
)
def test_rates(text: str, expected: float | None) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["", "M", "10X", "-5M", "1e3", "10 M", "iB", "ten"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def test_single_limit_holds_all_week() -> None:
    table = parse_timetable("20M")
    for moment in (at(0, 0), at(3, 12, 30), at(6, 23, 59)):
        assert table.at(moment) == Rate(20 * MiB, 20 * MiB)
    assert parse_timetable("off").at(at(2, 9)) == Rate(None, None)
    assert not parse_timetable("off").limited


def test_times_of_day_and_wrap_past_midnight() -> None:
    table = parse_timetable("08:00,512k 18:00,10M 23:00,off")
    assert table.at(at(2, 7, 59)) == Rate(None, None)  # 23:00's "off" goes on past midnight
    assert table.at(at(2, 8, 0)) == Rate(512 * KiB, 512 * KiB)
    assert table.at(at(2, 17, 59)) == Rate(512 * KiB, 512 * KiB)
    assert table.at(at(2, 18, 0)) == Rate(10 * MiB, 10 * MiB)
    assert table.at(at(2, 23, 30)) == Rate(None, None)
    assert table.at(at(0, 0, 1)) == Rate(None, None)  # Monday early: Sunday's last entry


def test_weekdays() -> None:
    table = parse_timetable("Mon-00:00,512k Fri-23:59,10M Sat-10:00,off;Sunday-20:00,1M")
    assert table.at(at(0, 0)) == Rate(512 * KiB, 512 * KiB)
    assert table.at(at(4, 23, 58)) == Rate(512 * KiB, 512 * KiB)  # Tuesday..Friday: Monday's
    assert table.at(at(4, 23, 59)) == Rate(10 * MiB, 10 * MiB)
    assert table.at(at(5, 9, 59)) == Rate(10 * MiB, 10 * MiB)
    assert table.at(at(5, 10)) == Rate(None, None)
    assert table.at(at(6, 20)) == Rate(MiB, MiB)
    # Entries in any order are sorted by the week.
    assert parse_timetable("Sat-10:00,off Mon-00:00,1M").at(at(1, 5)) == Rate(MiB, MiB)


def test_upload_download_pairs() -> None:
    assert parse_timetable("10M:off").at(at(1, 1)) == Rate(10 * MiB, None)
    table = parse_timetable("08:00,1M:5M 20:00,off")
    assert table.at(at(1, 9)) == Rate(MiB, 5 * MiB)
    assert table.at(at(1, 9)).of(Direction.DOWN) == 5 * MiB


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "empty"),
        ("bad", "'bad'"),
        ("bad,bad", "'bad,bad'"),
        ("2401,666", "'2401,666'"),
        ("24:00,1M", "'24:00,1M'"),
        ("10:61,1M", "'10:61,1M'"),
        ("08:00,512k 18:00,10X", "'18:00,10X'"),
        ("bad-10:20,666", "'bad-10:20,666'"),
        ("Mon-bad,666", "'Mon-bad,666'"),
        ("Mon-10:20,bad", "'Mon-10:20,bad'"),
        ("Mon-10:20", "'Mon-10:20'"),
        ("08:00,1M,2M 09:00,off", "'08:00,1M,2M'"),
        ("08:00,1M: 09:00,off", "'08:00,1M:'"),
    ],
)
def test_bad_timetables_name_the_entry(text: str, named: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_timetable(text)
    assert named in caught.value.message
    assert caught.value.exit_code == 2


def test_windows() -> None:
    night = parse_window("22:00-06:00")
    assert night.contains(at(1, 23)) and night.contains(at(2, 5, 59))
    assert not night.contains(at(2, 6)) and not night.contains(at(2, 12))
    assert night.opens(at(2, 12)) == at(2, 22)
    assert night.opens(at(2, 23)) == at(2, 23)
    assert night.closes(at(2, 23)) == at(3, 6)
    assert night.closes(at(2, 12)) == at(3, 6)  # the next window's end
    day = parse_window("09:30-17:00")
    assert day.opens(at(2, 18)) == at(3, 9, 30)
    assert parse_window("10:00:05-10:00:10").contains(at(2, 10).replace(second=7))
    for bad in ("22:00", "22-06", "25:00-06:00", "22:00-06:60", "06:00-06:00", ""):
        with pytest.raises(UsageError):
            parse_window(bad)


class FakeClock:
    """Time that passes only when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_limiter_averages_the_rate_and_keeps_pauses_as_credit() -> None:
    clock = FakeClock()
    limiter = Limiter(parse_timetable("10M"), clock=clock, sleep=clock.sleep)
    for _ in range(100):
        limiter.take(MiB, Direction.UP)
    assert clock.now - 1000.0 == pytest.approx(10.0, abs=0.01)
    # A pause (a pack's upload) shorter than the bucket's credit costs the average nothing.
    clock.now += 3.0
    start = clock.now
    for _ in range(30):
        limiter.take(MiB, Direction.UP)
    assert clock.now == pytest.approx(start)  # 3 s of credit at 10 MiB/s covers 30 MiB
    limiter.take(MiB, Direction.UP)
    assert clock.now == pytest.approx(start + 0.1, abs=0.01)
    # Downloads have their own bucket; "off" limits nothing.
    limiter.take(MiB, Direction.DOWN)
    free = Limiter(parse_timetable("10M:off"), clock=clock, sleep=clock.sleep)
    before = clock.now
    for _ in range(100):
        free.take(MiB, Direction.DOWN)
    assert clock.now == before


def test_throttled_store_charges_puts_and_gets(tmp_path: Path) -> None:
    inner = LocalStore(tmp_path / "r")
    inner.create([storage.Kind.SNAPSHOTS, storage.Kind.CHUNKS])
    clock = FakeClock()
    store = ThrottledStore(inner, Limiter(parse_timetable("1M"), clock=clock, sleep=clock.sleep))
    name = storage.snapshot("a" * 32)
    store.put(name, b"x" * MiB)
    store.put(name, b"x" * MiB)
    assert clock.now == pytest.approx(1002.0)
    assert store.get(name) == b"x" * MiB
    assert store.get_range(name, 0, MiB // 2) == b"x" * (MiB // 2)
    assert clock.now == pytest.approx(1003.5)
    assert store.stat(name).size == MiB  # not charged
    assert store.unwrapped() is inner
    assert throttled(inner, "off") is inner and throttled(inner, None) is inner


def test_backup_and_restore_keep_to_bwlimit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The limit holds for a backup's writes and a restore's reads: 8 MiB at 2 MiB/s cannot
    take less than 4 s (load only makes it slower)."""
    from tests.support import run_cli, write_random_image

    repo = tmp_path / "repo"
    assert run_cli("init", str(repo), "--encryption", "none") == 0
    image = tmp_path / "disk.img"
    write_random_image(image, 8 * MiB, zero_every=0)
    started = time.monotonic()
    assert run_cli("backup", "--repo", str(repo), "--bwlimit", "2M", str(image)) == 0
    assert time.monotonic() - started >= 3.9
    out = tmp_path / "out.img"
    started = time.monotonic()
    code = run_cli(
        "restore", "--repo", str(repo), "--bwlimit", "1M:4M", "--yes", "latest", str(out)
    )
    assert code == 0
    assert time.monotonic() - started >= 1.9  # downloads at 4 MiB/s
    assert out.read_bytes() == image.read_bytes()
    capsys.readouterr()


def test_backup_window_stops_with_no_snapshot_and_the_next_backup_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Closing 2 s after the start, while a 24 MiB backup at 4 MiB/s needs 6 s: exit 14,
    nothing listed; the next backup reuses what was stored."""
    from imaging.repository.store import Repository
    from tests.support import run_cli, write_random_image

    repo = tmp_path / "repo"
    assert run_cli("init", str(repo), "--encryption", "none") == 0
    image = tmp_path / "disk.img"
    write_random_image(image, 24 * MiB, zero_every=0)
    moment = datetime.now()
    window = f"{(moment - timedelta(hours=1)):%H:%M:%S}-{(moment + timedelta(seconds=2)):%H:%M:%S}"
    capsys.readouterr()
    code = run_cli("backup", "--repo", str(repo), "--window", window, "--bwlimit", "4M", str(image))
    err = capsys.readouterr().err
    assert code == 14, err
    assert "closed" in err and "run the same backup again" in err
    assert Repository.open(repo).snapshots() == []
    kept = sum(1 for _ in Repository.open(repo).store.list(storage.Kind.CHUNKS))
    assert kept > 0
    assert run_cli("backup", "--repo", str(repo), "--json", str(image)) == 0
    stats = json.loads(capsys.readouterr().out)["stats"]
    assert stats["dedup_bytes"] >= kept * MiB
    # Outside the window a backup says until when it waits.
    moment = datetime.now()
    window = f"{(moment + timedelta(seconds=2)):%H:%M:%S}-{(moment + timedelta(hours=1)):%H:%M:%S}"
    assert run_cli("backup", "--repo", str(repo), "--window", window, str(image)) == 0
    assert f"waiting until {(moment + timedelta(seconds=2)):%Y-%m-%d %H:%M:%S}" in (
        capsys.readouterr().err
    )
