"""Back up through the app: a real disk into a real repository on a real backup drive."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from imaging.repository.store import Repository
from imaging.units import human_size
from recovery_ui.app import HourglassApp
from recovery_ui.screens.backup import BackupScreen
from recovery_ui.screens.home import HomeScreen
from tests.conftest import PASSPHRASE
from tests.recovery_ui.conftest import (
    Drive,
    Part,
    Source,
    make_disk,
    mounted,
    screen_text,
    settle,
    shot,
    unmount_all,
    wait_for,
)
from tests.recovery_ui.flows import (
    back_up_disk,
    choose_option,
    highlight_option,
    open_found_repository,
    type_text,
)
from tests.support import MiB, sh

pytestmark = [pytest.mark.integration, pytest.mark.root]


async def test_back_up_a_whole_disk(
    make_app: Callable[..., HourglassApp], source: Source, backup_drive: Drive
) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        shot(app, "backup-0-home")
        home = screen_text(app)
        assert source.device in home and backup_drive.device in home
        assert "hourglass-backups" in home  # the repository the probe found
        assert "/run/hourglass" not in home  # shown from the drive's root, not where mounted
        await pilot.press("1")
        await settle(pilot)
        await highlight_option(pilot, "disks", source.device)
        shot(app, "backup-1-source")
        await pilot.press("enter")  # Enter on the disk goes Next, all partitions ticked
        await settle(pilot)
        # The repository chooser: the one found on the drive, then its passphrase.
        assert "Where should the backup go?" in screen_text(app)
        assert "/run/hourglass" not in screen_text(app)
        shot(app, "backup-2-choose")
        await open_found_repository(pilot)
        shot(app, "backup-4-summary")
        summary = screen_text(app)
        assert "the whole disk" in summary, summary
        await pilot.click("#start")
        await settle(pilot, timeout=120)
        shot(app, "backup-5-result")
        result = screen_text(app)
        assert "The backup is complete and checked." in result, result
        opened = app.opened
        assert opened is not None and opened.writable
        repo = Repository.open(opened.path, PASSPHRASE)
        assert len(repo.snapshots()) == 3
        assert repo.snapshots()[-1].source == source.device
        # What was new and the room it takes are two amounts, each said for what it is.
        stats = repo.snapshots()[-1].record.stats
        assert (
            f"New data: {human_size(stats.new_bytes)}; already in the repository, so not "
            f"stored again: {human_size(stats.dedup_bytes)}"
        ) in result, result
        stored = human_size(repo.snapshots()[-1].stored)
        assert f"Room it takes on the backup drive, compressed: {stored}" in result, result
    # The app unmounted what it mounted read-write when it quit.
    assert not os.path.exists(opened.path)


async def test_escape_goes_back_a_step(
    make_app: Callable[..., HourglassApp], source: Source, backup_drive: Drive
) -> None:
    """Escape in the repository chooser and on the summary goes back to choosing the disk,
    with the disk list focused; escape there leaves the wizard."""
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await back_up_disk(pilot, source.device)
        assert "Where should the backup go?" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, BackupScreen) and app.screen.pane == "source"
        assert app.focused is app.screen.query_one("#disks")
        # A disk clicked is chosen, and its partitions come next (Enter would go on).
        await pilot.click("#disks", offset=(4, 0))
        await settle(pilot)
        assert app.screen.pane == "source" and app.focused is app.screen.query_one("#parts")
        await pilot.click("#source-next")
        await open_found_repository(pilot)
        assert app.screen.pane == "summary"
        assert "Check before the backup starts" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen.pane == "source"
        assert app.focused is app.screen.query_one("#disks")
        assert "Which disk do you want to back up?" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, HomeScreen)


@pytest.fixture
def slow_disk(tmp_path: Path) -> Iterator[str]:
    """A disk that reads at about 30 MB/s (FUSE under a loop device, see slowdisk.py): one
    partition of 96 MiB of random bytes, so a backup runs for seconds and can be cancelled."""
    image = tmp_path / "slow.img"
    make_disk(image, [Part(1, "", 96, "random")], 100)
    with open(image, "r+b") as f:
        f.seek(MiB)
        for _ in range(96):
            f.write(os.urandom(MiB))
    where = tmp_path / "slow"
    where.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.recovery_ui.slowdisk", str(image), str(where), "0.004"],
        cwd=Path(__file__).parents[2],
    )
    try:
        for _ in range(100):
            if (where / "disk.img").exists():
                break
            time.sleep(0.05)
        device = sh("losetup", "--read-only", "--show", "--find", where / "disk.img").stdout
        device = device.strip()
        try:
            subprocess.run(["partx", "--delete", device], check=False, capture_output=True)
            sh("partx", "--add", device)  # (a killed run's stale nodes removed first)
            yield device
        finally:
            subprocess.run(["partx", "--delete", device], check=False, capture_output=True)
            subprocess.run(["losetup", "--detach", device], check=False)
    finally:
        subprocess.run(["umount", str(where)], check=False, capture_output=True)
        server.terminate()
        server.wait(10)


async def test_cancel_leaves_no_snapshot(
    make_app: Callable[..., HourglassApp], slow_disk: str, backup_drive: Drive
) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await back_up_disk(pilot, slow_disk)
        await open_found_repository(pilot)
        assert app.opened is not None
        before = [s.id for s in app.opened.repo.snapshots()]
        await pilot.click("#start")
        await wait_for(pilot, app.busy, what="the backup to start")
        await pilot.pause(0.6)
        progress = screen_text(app)
        shot(app, "backup-progress")
        assert "Reading and storing the disk" in progress and "MB/s" in progress, progress
        await pilot.press("escape")  # asks whether to cancel
        await pilot.pause()
        assert "Cancel the backup?" in screen_text(app)
        shot(app, "backup-cancel-question")
        await pilot.click("#yes")
        await settle(pilot, timeout=120)
        result = screen_text(app)
        shot(app, "backup-cancel-result")
        assert "The backup was cancelled." in result, result
        assert "No snapshot was recorded" in result
        assert "This did not work" not in result  # a cancel asked for is no error
        assert [s.id for s in app.opened.repo.snapshots()] == before


async def test_new_repository_on_a_blank_drive_formatted_first(
    make_app: Callable[..., HourglassApp], source: Source, blank_disk: str
) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await back_up_disk(pilot, source.device)
        await new_repository_on(pilot, f"format-{blank_disk}")
        confirm = screen_text(app)
        shot(app, "format-confirm")
        assert "Format this disk?" in confirm
        assert blank_disk in confirm and "Loop device" in confirm and "146.8 MB" in confirm
        word = os.path.basename(blank_disk)
        await type_text(pilot, "yes")
        await pilot.press("enter")  # the wrong word does nothing
        assert "Format this disk?" in screen_text(app)
        await pilot.press(*["backspace"] * 3)
        await type_text(pilot, word)
        await pilot.press("enter")
        await settle(pilot)
        new = screen_text(app)
        assert "New repository" in new
        # Where it goes is said as the disk, partition and folder: not the mount point.
        assert "Loop device, partition 1" in new and "/run/hourglass" not in new, new
        await type_text(pilot, "a new passphrase")
        await pilot.press("enter")
        await type_text(pilot, "a new passphrase")
        await pilot.press("enter")
        await settle(pilot)
        assert "Check before the backup starts" in screen_text(app)
        await pilot.click("#start")
        await settle(pilot, timeout=120)
        assert "The backup is complete and checked." in screen_text(app)
        assert app.opened is not None
        repo = Repository.open(app.opened.path, "a new passphrase")
        assert [s.source for s in repo.snapshots()] == [source.device]
    probe = sh("blkid", "-p", "-o", "export", f"{blank_disk}p1").stdout
    assert "TYPE=ext4" in probe and "LABEL=HOURGLASS" in probe


async def new_repository_on(pilot: Pilot[Any], place: str) -> None:
    """In the repository chooser: Create a new repository..., the place ``place`` (a
    partition, or a blank disk to format), the folder's default name."""
    await choose_option(pilot, "where", "create")
    await settle(pilot)
    await choose_option(pilot, "partitions", place)
    await pilot.press("enter")
    await settle(pilot)


def mountpoints_of(device: str) -> list[str]:
    found = subprocess.run(["findmnt", "-rn", "-S", device, "-o", "TARGET"], capture_output=True)
    return found.stdout.decode().split()


async def test_a_place_left_before_its_repository_is_made_is_unmounted(
    make_app: Callable[..., HourglassApp], source: Source, blank_disk: str
) -> None:
    """A drive formatted for a new repository, or a partition chosen for one, and then left
    (Escape, or quitting on the passphrase) is not left mounted read-write (issue 22)."""
    app = make_app()
    partition = f"{blank_disk}p1"
    async with app.run_test(size=(100, 30)) as pilot:
        await back_up_disk(pilot, source.device)
        await new_repository_on(pilot, f"format-{blank_disk}")
        await type_text(pilot, os.path.basename(blank_disk))
        await pilot.press("enter")
        await settle(pilot)
        assert "New repository" in screen_text(app)
        assert mountpoints_of(partition), "mounted to make the repository in"
        await pilot.press("escape")
        await settle(pilot)
        assert "Where should the backup go?" in screen_text(app)
        assert mountpoints_of(partition) == []
        # Again, on the partition now there, and the app quit on the passphrase.
        await new_repository_on(pilot, f"part-{partition}")
        assert "New repository" in screen_text(app)
        assert mountpoints_of(partition)
        await pilot.press("ctrl+q")
        await settle(pilot)
    assert mountpoints_of(partition) == []


async def test_quitting_during_a_backup_asks_and_records_nothing(
    make_app: Callable[..., HourglassApp], slow_disk: str, backup_drive: Drive, tmp_path: Path
) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await back_up_disk(pilot, slow_disk)
        await open_found_repository(pilot)
        assert app.opened is not None
        before = [s.id for s in app.opened.repo.snapshots()]
        await pilot.click("#start")
        await wait_for(pilot, app.busy, what="the backup to start")
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert "Quit Hourglass?" in screen_text(app)
        await pilot.click("#yes")
    assert app.return_code == 0
    # Read the drive afresh once the app and its backup have stopped.
    for _ in range(100):
        if not [t for t in threading.enumerate() if t.name.startswith("backup")]:
            break
        time.sleep(0.1)
    unmount_all(backup_drive.device)
    with mounted(backup_drive.partition, tmp_path / "check") as root:
        repo = Repository.open(root / "hourglass-backups", PASSPHRASE)
        assert [s.id for s in repo.snapshots()] == before


def option_ids(app: HourglassApp, list_id: str) -> list[str]:
    from textual.widgets import OptionList

    widget = app.screen.query_one(f"#{list_id}", OptionList)
    return [widget.get_option_at_index(i).id or "" for i in range(widget.option_count)]


async def test_back_up_never_offers_the_backup_drive_or_the_source_as_places(
    make_app: Callable[..., HourglassApp], source: Source, backup_drive: Drive
) -> None:
    """Issue 22, item 6: the backup drive is never preselected as the source (and not
    offered once its repository is open); the disk to be backed up offers neither its
    partitions for a new repository nor its repositories (the refusal came after the
    passphrase)."""
    from textual.widgets import OptionList

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await wait_for(pilot, lambda: bool(app.found), what="the drive's repository found")
        await pilot.press("1")
        await settle(pilot)
        disks = option_ids(app, "disks")
        assert backup_drive.device in disks and source.device in disks
        highlighted = app.screen.query_one("#disks", OptionList).highlighted
        assert highlighted is not None and disks[highlighted] != backup_drive.device
        assert disks.index(backup_drive.device) > disks.index(source.device)

        # The PC's disk: its partitions are no place for a new repository.
        await choose_option(pilot, "disks", source.device)
        await settle(pilot)
        assert "found-0" in option_ids(app, "where"), (app.found, app.disks)  # the drive's
        await choose_option(pilot, "where", "create")
        await settle(pilot)
        places = option_ids(app, "partitions")
        assert f"part-{backup_drive.partition}" in places
        for number in (1, 2, 3):
            assert f"part-{source.device}p{number}" not in places, places
        await pilot.press("escape")
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, BackupScreen) and app.screen.pane == "source"

        # The backup drive chosen as the source: its repository is not offered (no
        # passphrase to type before a refusal), nor its partition as a new one's place.
        await choose_option(pilot, "disks", backup_drive.device)
        await settle(pilot)
        assert not [i for i in option_ids(app, "where") if i.startswith("found-")]
        await choose_option(pilot, "where", "create")
        await settle(pilot)
        assert f"part-{backup_drive.partition}" not in option_ids(app, "partitions")
        await pilot.press("escape")
        await pilot.press("escape")
        await settle(pilot)

        # With the drive's repository open, the drive is not offered at all.
        await choose_option(pilot, "disks", source.device)
        await open_found_repository(pilot)
        assert app.screen.pane == "summary"
        await pilot.press("escape")
        await settle(pilot)
        assert backup_drive.device not in option_ids(app, "disks")
        assert source.device in option_ids(app, "disks")
