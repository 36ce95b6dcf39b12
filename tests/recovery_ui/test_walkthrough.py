"""One person's path through the app at 80x24, in each language (issue 22): the first backup
into a new repository on an empty drive (and a recovery key for it), a file restored from
that backup onto a USB stick, and the whole disk restored onto a blank disk. Each step's
outcome is checked on the real disks and repository; each flow's wall time is printed
(``pytest -s``), and ``HOURGLASS_TEST_SHOTS=DIR`` keeps the pictures docs/APP.md shows."""

from __future__ import annotations

import filecmp
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button

from imaging.disks.table import read_table
from imaging.repository.store import Repository
from recovery_ui.app import HourglassApp
from recovery_ui.i18n import _
from recovery_ui.screens.backup import BackupScreen
from recovery_ui.screens.home import HomeScreen
from recovery_ui.screens.recovery_key import RecoveryKeyDialog
from recovery_ui.screens.repository import RepositoryScreen
from recovery_ui.screens.restore_files import FileTree, RestoreFilesScreen
from recovery_ui.screens.restore_system import RestoreSystemScreen
from recovery_ui.widgets.controls import Label
from tests.recovery_ui.conftest import (
    THESIS,
    Drive,
    Part,
    Source,
    disk,
    mounted,
    screen_text,
    settle,
    shot,
    wait_for,
)
from tests.recovery_ui.flows import choose_option, highlight_option, type_text
from tests.support import sh

pytestmark = [pytest.mark.integration, pytest.mark.root]

SIZE = (80, 24)
NEW_PASSPHRASE = "my first backup drive"


@pytest.fixture
def empty_drive(tmp_path: Path) -> Iterator[Drive]:
    """A new USB backup drive: one empty ext4 partition, no repository on it yet."""
    with disk(tmp_path / "usb.img", [Part(1, "ext4", 200, "BACKUP")], 210) as device:
        yield Drive(device, f"{device}p1", tmp_path / "usb.img")


@contextmanager
def read_only(device: str, where: Path) -> Iterator[Path]:
    """``device`` mounted read-only (ext4 without replaying its journal: nothing written)."""
    where.mkdir(parents=True, exist_ok=True)
    sh("mount", "-o", "ro,noload", device, where)
    try:
        yield where
    finally:
        sh("umount", where)


def picture(app: HourglassApp, language: str, number: int, name: str) -> None:
    shot(app, f"walkthrough-{language}-{number:02d}-{name}")


def says(app: HourglassApp, message: str) -> bool:
    """Whether the screen shows ``message`` in the app's language (wrapping aside)."""
    return "".join(_(message).split()) in "".join(screen_text(app).split())


def result_is_good(app: HourglassApp, title: str) -> None:
    label = app.screen.query_one("#result-title", Label)
    assert label.has_class("good") and says(app, title), screen_text(app)


async def leave_for_home(pilot: Pilot[Any]) -> None:
    """The result pane's Done: back on the home screen."""
    await pilot.click("#done")
    await settle(pilot)
    assert isinstance(pilot.app.screen, HomeScreen), screen_text(pilot.app)


async def open_the_open_repository(pilot: Pilot[Any]) -> None:
    """In the repository chooser: the repository the app has open (no passphrase again)."""
    await settle(pilot)
    await choose_option(pilot, "where", "open")
    await settle(pilot)


async def first_backup(
    pilot: Pilot[Any], language: str, source: Source, drive: Drive
) -> Repository:
    app: HourglassApp = pilot.app  # type: ignore[assignment]
    await settle(pilot)
    picture(app, language, 1, "home")
    assert not app.found, app.found  # an empty drive: no repository yet
    await pilot.press("1")
    await settle(pilot)
    assert isinstance(app.screen, BackupScreen)
    await highlight_option(pilot, "disks", source.device)
    await settle(pilot)
    picture(app, language, 2, "disk")
    await pilot.press("enter")  # Enter on the disk goes Next, every partition ticked
    await settle(pilot)
    assert says(app, "Where should the backup go?")
    picture(app, language, 3, "where")
    await choose_option(pilot, "where", "create")
    await settle(pilot)
    await choose_option(pilot, "partitions", f"part-{drive.partition}")
    await pilot.pause()
    picture(app, language, 4, "place")
    await pilot.press("enter")  # the folder's default name
    await settle(pilot)
    assert says(app, "New repository")
    await type_text(pilot, NEW_PASSPHRASE)
    await pilot.press("enter")
    await type_text(pilot, NEW_PASSPHRASE)
    await pilot.pause()
    picture(app, language, 5, "passphrase")
    await pilot.press("enter")
    await settle(pilot)
    assert app.screen.pane == "summary" and says(app, "Check before the backup starts")
    picture(app, language, 6, "check")
    assert app.focused is app.screen.query_one("#start", Button)
    await pilot.press("enter")
    await pilot.pause()
    if app.screen.pane == "progress":
        picture(app, language, 7, "progress")
    await settle(pilot, timeout=120)
    picture(app, language, 8, "result")
    result_is_good(app, "The backup is complete and checked.")
    opened = app.opened
    assert opened is not None and opened.disk == drive.device
    repo = Repository.open(opened.path, NEW_PASSPHRASE)
    assert [s.source for s in repo.snapshots()] == [source.device]
    assert repo.snapshots()[0].kind == "disk"

    # The recovery key, a second way in, is added in Repository.
    await leave_for_home(pilot)
    await pilot.press("4")
    await open_the_open_repository(pilot)
    assert isinstance(app.screen, RepositoryScreen)
    await pilot.click("#tab-recovery")
    await settle(pilot)
    picture(app, language, 9, "recovery")
    await pilot.click("#recovery-go")
    await settle(pilot)
    assert isinstance(app.screen, RecoveryKeyDialog)
    picture(app, language, 10, "recovery-key")
    key = app.screen.key
    await pilot.click("#done")
    await settle(pilot)
    assert Repository.open(opened.path, key).snapshots()[0].id == repo.snapshots()[0].id
    await pilot.press("escape")
    await settle(pilot)
    assert isinstance(app.screen, HomeScreen)
    return repo


async def restore_a_file(pilot: Pilot[Any], language: str, stick: Drive) -> None:
    app: HourglassApp = pilot.app  # type: ignore[assignment]
    await pilot.press("3")
    await open_the_open_repository(pilot)
    assert isinstance(app.screen, RestoreFilesScreen) and app.screen.pane == "when"
    picture(app, language, 11, "when")
    await pilot.press("enter")  # the one snapshot, the newest
    await settle(pilot)
    assert app.screen.pane == "partition"
    picture(app, language, 12, "partition")
    await choose_option(pilot, "images", "p2")
    await settle(pilot)
    assert app.screen.pane == "browse"
    tree = app.screen.query_one("#tree", FileTree)
    for folder in ("/home", "/home/ann"):
        node = tree.reveal(folder)
        assert node is not None, f"{folder} is not in the tree"
        tree.move_cursor(node)
        await pilot.press("enter")  # a folder opens (and is listed the first time)
        await settle(pilot)
    thesis = tree.reveal(THESIS)
    assert thesis is not None
    tree.move_cursor(thesis)
    await pilot.press("enter")  # its versions
    await settle(pilot)
    await pilot.press("space")  # marked for restoring
    await pilot.pause()
    assert tree.marked == {THESIS}
    picture(app, language, 13, "marked")
    await pilot.press("r")
    await settle(pilot)
    assert app.screen.pane == "dest"
    await choose_option(pilot, "dests", stick.partition)
    field = app.screen.query_one("#dest-folder")
    field.value = ""  # type: ignore[attr-defined]
    await type_text(pilot, "rescued")
    picture(app, language, 14, "where")
    await pilot.press("enter")
    await settle(pilot, timeout=120)
    picture(app, language, 15, "result")
    result_is_good(app, "The files are restored.")
    await leave_for_home(pilot)


async def restore_the_disk(pilot: Pilot[Any], language: str, target: str) -> None:
    app: HourglassApp = pilot.app  # type: ignore[assignment]
    await pilot.press("2")
    await open_the_open_repository(pilot)
    assert isinstance(app.screen, RestoreSystemScreen) and app.screen.pane == "when"
    picture(app, language, 16, "when")
    await pilot.click("#when-next")
    await settle(pilot)
    assert app.screen.pane == "target"
    await choose_option(pilot, "targets", target)
    await settle(pilot)
    picture(app, language, 17, "disk")
    assert says(app, "The backup fits on this disk.")
    await pilot.click("#restore")
    await settle(pilot)
    assert says(app, "Erase this disk and restore the backup onto it?")
    picture(app, language, 18, "confirm")
    await type_text(pilot, os.path.basename(target))
    await pilot.pause()
    picture(app, language, 19, "typed")
    await pilot.press("enter")
    await pilot.pause()
    if isinstance(app.screen, RestoreSystemScreen) and app.screen.pane == "progress":
        picture(app, language, 20, "progress")
    await settle(pilot, timeout=120)
    await wait_for(pilot, lambda: app.screen.pane == "result", what="the result")
    picture(app, language, 21, "result")
    result_is_good(app, "The system is restored.")
    assert app.screen.query_one("#reboot").display


@pytest.mark.parametrize("language", ["en", "zh_CN"])
async def test_walk_through_backup_and_restores_at_80x24(
    make_app: Callable[..., HourglassApp],
    language: str,
    source: Source,
    empty_drive: Drive,
    stick: Drive,
    blank_disk: str,
    tmp_path: Path,
) -> None:
    with read_only(f"{source.device}p2", tmp_path / "original") as root:
        original = (root / THESIS.lstrip("/")).read_bytes()
    times: dict[str, float] = {}
    app = make_app(language=language)
    async with app.run_test(size=SIZE) as pilot:
        start = time.monotonic()
        await first_backup(pilot, language, source, empty_drive)
        times["first backup"] = time.monotonic() - start
        start = time.monotonic()
        await restore_a_file(pilot, language, stick)
        times["file restore"] = time.monotonic() - start
        start = time.monotonic()
        await restore_the_disk(pilot, language, blank_disk)
        times["whole-disk restore"] = time.monotonic() - start
    print(f"\nwalk-through ({language}, 80x24):", end="")
    for flow, seconds in times.items():
        print(f" {flow} {seconds:.1f} s;", end="")
    print()

    with mounted(stick.partition, tmp_path / "stick") as root:
        assert (root / "rescued" / "thesis.txt").read_bytes() == original

    before, after = read_table(source.device), read_table(blank_disk)
    assert before is not None and after is not None
    # A disk of the same size: the same partitions where they were (the grow choice is not
    # ticked for the few MB the source left free at its end).
    assert [(p.number, p.guid, p.start, p.sectors) for p in after.partitions] == [
        (p.number, p.guid, p.start, p.sectors) for p in before.partitions
    ]
    for number in (2, 3):  # the ext4 partitions, every file
        with (
            read_only(f"{source.device}p{number}", tmp_path / f"was-{number}") as was,
            read_only(f"{blank_disk}p{number}", tmp_path / f"now-{number}") as now,
        ):
            assert_same_tree(was, now)


def assert_same_tree(was: Path, now: Path) -> None:
    """The same files with the same bytes under both folders."""
    files = sorted(p.relative_to(was) for p in was.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(now) for p in now.rglob("*") if p.is_file())
    for relative in files:
        assert filecmp.cmp(was / relative, now / relative, shallow=False), relative
