"""Home opens a repository found on a drive and lists its recent snapshots; a folder on an
SSH server (sshfs) becomes the place of a new repository, and a backup goes there."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from imaging.repository.store import Repository, Snapshot
from recovery_ui.app import HourglassApp
from recovery_ui.text import when
from recovery_ui.widgets.controls import Static
from tests.imaging.test_locations import sshd  # noqa: F401 (a fixture)
from tests.recovery_ui.conftest import Drive, Source, screen_text, settle, shot
from tests.recovery_ui.flows import back_up_disk, choose_option, type_text

pytestmark = [pytest.mark.integration, pytest.mark.root]


async def open_found_on_home(pilot: Pilot[Any]) -> None:
    """On Home: the repository found on the drive, and its passphrase."""
    from tests.conftest import PASSPHRASE

    await settle(pilot)
    await choose_option(pilot, "repos", "found-0")
    await settle(pilot)
    await type_text(pilot, PASSPHRASE)
    await pilot.press("enter")
    await settle(pilot)


async def test_home_opens_a_repository_and_shows_its_snapshots(
    make_app: Callable[..., HourglassApp],
    template: tuple[Path, list[Snapshot]],
    backup_drive: Drive,
) -> None:

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_found_on_home(pilot)
        home = screen_text(app)
        shot(app, "home-opened")
        for snapshot in template[1]:
            assert when(snapshot.time) in home, home
        assert "Repository: Loop device, partition 1: /hourglass-backups" in home
        # The theme can be changed (and is the settings' "theme").
        await pilot.press("6")
        await settle(pilot)
        await choose_option(pilot, "theme", "light")
        await pilot.pause()
        assert app.theme == "textual-light" and app.current_settings().theme == "light"


async def test_backup_into_a_new_repository_on_an_ssh_folder(
    make_app: Callable[..., HourglassApp],
    source: Source,
    sshd: tuple[int, Path, Path],  # noqa: F811
) -> None:
    port, key, remote = sshd
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await back_up_disk(pilot, source.device)
        await choose_option(pilot, "where", "share")
        await settle(pilot)
        await choose_option(pilot, "kind", "ssh")
        for field, value in (
            ("host", "127.0.0.1"),
            ("path", str(remote)),
            ("user", "root"),
            ("port", str(port)),
            ("key", str(key)),
        ):
            await pilot.click(f"#{field}")
            await type_text(pilot, value)
        shot(app, "share")
        await pilot.click("#connect")
        await settle(pilot)
        # No repository there yet: a new one, in the default folder.
        assert "New repository" in screen_text(app), screen_text(app)
        await type_text(pilot, "ssh passphrase")
        await pilot.press("enter")
        await type_text(pilot, "ssh passphrase")
        await pilot.press("enter")
        await settle(pilot)
        await pilot.click("#start")
        await settle(pilot, timeout=120)
        assert "The backup is complete and checked." in screen_text(app)
    repo = Repository.open(remote / "hourglass-backups", "ssh passphrase")
    assert [s.source for s in repo.snapshots()] == [source.device]


async def test_home_warns_when_the_newest_snapshot_seen_is_gone(
    make_app: Callable[..., HourglassApp],
    template: tuple[Path, list[Snapshot]],
    backup_drive: Drive,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """This computer saw both snapshots; the drive now holds only the first (put back to an
    older copy, or the newest manifest deleted): Home says so, in English and in Chinese."""
    from imaging.repository import seen
    from tests.conftest import PASSPHRASE
    from tests.recovery_ui.conftest import mounted

    monkeypatch.setenv("HOURGLASS_STATE_DIR", str(tmp_path / "state"))
    original = Repository.open(template[0], PASSPHRASE)  # the drive's repository, same id
    assert seen.note_listing(original, original.snapshots()) is None
    newest = template[1][-1]
    with mounted(backup_drive.partition, tmp_path / "drive") as root:
        (root / "hourglass-backups" / "snapshots" / f"{newest.id}.snap").unlink()
    for language, warning in (("en", "is gone from the drive"), ("zh_CN", "已不在驱动器上")):
        app = make_app(language=language)
        async with app.run_test(size=(120, 40)) as pilot:
            await open_found_on_home(pilot)
            home = screen_text(app)
            assert warning in home, home
            assert when(template[1][0].time) in home and when(newest.time) not in home


async def test_the_open_repository_is_not_asked_for_again(
    make_app: Callable[..., HourglassApp],
    template: tuple[Path, list[Snapshot]],
    backup_drive: Drive,
) -> None:
    """Issue 22, item 10: choosing the repository that is already open (on Home, or from
    the chooser of another screen) opens nothing again and asks no passphrase."""
    from recovery_ui.screens.choose_repository import ChooseRepository
    from recovery_ui.screens.home import HomeScreen

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_found_on_home(pilot)
        opened = app.opened
        assert opened is not None
        await choose_option(pilot, "repos", "found-0")
        await settle(pilot)
        assert isinstance(app.screen, HomeScreen), screen_text(app)
        assert "passphrase" not in screen_text(app).lower()
        assert app.opened is opened
        # Restore files: the chooser offers the open repository first, and it needs no
        # passphrase either.
        await pilot.press("3")
        await settle(pilot)
        await choose_option(pilot, "where", "open")
        await settle(pilot)
        assert app.opened is opened
        assert not any(isinstance(s, ChooseRepository) for s in app.screen_stack)


async def test_home_says_when_no_disk_was_found(
    make_app: Callable[..., HourglassApp], tmp_path: Path
) -> None:
    """ "Looking for disks..." only while the first listing runs: after it, with no disk in
    the app's scope, Home says so and how to look again (it said "Looking" for ever)."""
    from imaging.jobs.disks import Scope

    empty = tmp_path / "no-disks"
    empty.mkdir()
    app = make_app(scope=Scope(folders=(str(empty),)))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        shown = " ".join(screen_text(app).split())
        assert app.disks_listed and app.disks == []
        note = str(app.screen.query_one("#disks").query_one(Static).render())
        assert note == "No disk was found. Plug one in, then press F5 to look again.", note
        assert "No disk was found" in shown and "Looking for disks" not in shown, shown
