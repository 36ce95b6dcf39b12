"""Issue 22, item 2 in the app: the backup drive vanishes mid-backup.

A real exFAT backup drive (exfat-fuse, as on a kernel without exFAT) holding a repository,
a slow source disk so that the backup is still running when the FUSE driver is killed."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.widgets import OptionList

from imaging.mounts.mountinfo import is_mounted
from imaging.repository.store import Repository
from recovery_ui.app import HourglassApp
from recovery_ui.screens.choose_repository import ChooseRepository
from recovery_ui.screens.home import HomeScreen
from tests.conftest import PASSPHRASE
from tests.imaging.disks import helpers
from tests.recovery_ui.conftest import (
    Drive,
    Part,
    Source,
    disk,
    make_disk,
    mounted,
    screen_text,
    settle,
    shot,
    unmount_all,
    wait_for,
)
from tests.recovery_ui.flows import back_up_disk, choose_option, open_found_repository, type_text
from tests.recovery_ui.test_backup_flow import slow_disk  # noqa: F401 (a fixture)
from tests.support import have, kill_exfat_fuse, sh

# Never beside another of these (tests/conftest.py, xdist): a killed FUSE daemon's mount
# still names its loop partition until it is cleaned up, and discovery on the other worker
# then took a reused device of that name for mounted.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.xdist_group("dead-fuse"),
]

SAID = "The backup drive was disconnected. Plug it in and choose it again."


@pytest.fixture
def exfat_drive(tmp_path: Path) -> Iterator[Drive]:
    """A USB drive: GPT, one exFAT partition holding an empty repository."""
    for tool in ("mkfs.exfat", "mount.exfat-fuse"):
        if not have(tool):
            pytest.skip(f"needs {tool}")
    with disk(tmp_path / "usb.img", [Part(1, "exfat", 300, "BACKUP")], 310) as device:
        where = tmp_path / "fill"
        where.mkdir()
        sh("mount.exfat-fuse", f"{device}p1", where)
        try:
            Repository.init(where / "hourglass-backups", passphrase=PASSPHRASE)
        finally:
            sh("umount", where)
        yield Drive(device, f"{device}p1", tmp_path / "usb.img")


async def test_a_drive_that_vanishes_mid_backup(
    make_app: Callable[..., HourglassApp],
    slow_disk: str,  # noqa: F811
    exfat_drive: Drive,
) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await back_up_disk(pilot, slow_disk)
        await open_found_repository(pilot)
        opened = app.opened
        assert opened is not None and opened.location is not None
        mountpoint = opened.location.mountpoint
        assert mountpoint.startswith("/run/hourglass/locations/")
        await pilot.click("#start")
        await wait_for(pilot, app.busy, what="the backup to start")
        await pilot.pause(0.5)
        assert app.busy(), "the backup ended before the drive went"
        kill_exfat_fuse(mountpoint)
        await settle(pilot, timeout=120)
        said = screen_text(app)
        shot(app, "backup-drive-lost")
        assert SAID in said, said
        for raw in ("Errno", "FileNotFoundError", "Something unexpected", "/run/hourglass"):
            assert raw not in said, said
        assert "No repository open" in said  # the title bar

        # The repository is closed, its dead mount gone, nothing was recorded.
        assert app.opened is None
        await wait_for(pilot, lambda: not is_mounted(mountpoint), 30, "the dead mount to go")
        assert not os.path.exists(mountpoint)
        assert not any("Traceback" in line for line in app.session_log.lines)

        # The drive is offered again (once the FUSE driver is back: here, at once).
        await wait_for(pilot, lambda: bool(app.found), 30, "the drive to be offered again")
        await pilot.press("escape")  # the error dialog
        await settle(pilot)
        assert "The backup failed." in screen_text(app)
        await pilot.click("#done")
        await settle(pilot)
        assert isinstance(app.screen, HomeScreen)

        # The next backup works, and it is the only snapshot.
        await back_up_disk(pilot, slow_disk)
        assert isinstance(app.screen, ChooseRepository)
        await choose_option(pilot, "where", "found-0")
        await settle(pilot)
        await type_text(pilot, PASSPHRASE)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.click("#start")
        await settle(pilot, timeout=180)
        assert "The backup is complete and checked." in screen_text(app), screen_text(app)
        assert app.opened is not None
        assert len(app.opened.repo.snapshots()) == 1


async def test_the_chooser_offers_a_drive_plugged_in_while_it_is_open(
    make_app: Callable[..., HourglassApp], source: Source, tmp_path: Path
) -> None:
    image = tmp_path / "late.img"
    make_disk(image, [Part(1, "ext4", 40, "LATE")], 48)
    with helpers.attached(image) as device:
        helpers.make_fs(f"{device}p1", "ext4", "LATE")
        with mounted(f"{device}p1", tmp_path / "fill") as root:
            Repository.init(root / "hourglass-backups", passphrase=PASSPHRASE)
    app = make_app(watch_disks=True)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app._watcher is not None, "no netlink here"
        await back_up_disk(pilot, source.device)
        assert isinstance(app.screen, ChooseRepository)
        assert "No repository was found on the drives." in screen_text(app)
        with helpers.attached(image) as device:
            try:
                # Wait for the found repository itself: a share another test mounted
                # (locations are machine-wide) may also name "hourglass-backups".
                def ids() -> list[str | None]:
                    where = app.screen.query_one("#where", OptionList)
                    return [where.get_option_at_index(i).id for i in range(where.option_count)]

                await wait_for(
                    pilot, lambda: "found-0" in ids(), 30, "the plugged-in drive in the chooser"
                )
                assert "No repository was found" not in screen_text(app)
            finally:
                await settle(pilot)
                unmount_all(device)
