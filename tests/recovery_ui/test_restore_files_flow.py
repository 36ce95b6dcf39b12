"""Restore files through the app: browse a snapshot's partition, search, the versions of a
file, restore the marked files and an older version onto a USB stick."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from imaging.disks import mounts
from imaging.repository.store import Snapshot
from recovery_ui.app import HourglassApp
from recovery_ui.screens.restore_files import FileTree
from tests.recovery_ui.conftest import (
    THESIS,
    Drive,
    Source,
    mounted,
    screen_text,
    settle,
    shot,
)
from tests.recovery_ui.flows import choose_option, open_found_repository, type_text

pytestmark = [pytest.mark.integration, pytest.mark.root]


async def open_folder(pilot: Pilot[Any], path: str) -> None:
    tree = pilot.app.screen.query_one("#tree", FileTree)
    node = tree.reveal(path)
    assert node is not None, f"{path} is not in the tree"
    tree.move_cursor(node)
    await pilot.press("enter")  # a folder opens (and is listed the first time)
    await settle(pilot)


async def restore_to(pilot: Pilot[Any], stick: Drive, folder: str) -> None:
    await settle(pilot)
    await choose_option(pilot, "dests", stick.partition)
    field = pilot.app.screen.query_one("#dest-folder")
    field.value = ""  # type: ignore[attr-defined]
    await type_text(pilot, folder)
    await pilot.press("enter")
    await settle(pilot, timeout=120)


async def test_browse_search_versions_and_restore(
    make_app: Callable[..., HourglassApp],
    source: Source,
    template: tuple[Path, list[Snapshot]],
    backup_drive: Drive,
    stick: Drive,
    tmp_path: Path,
) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await open_found_repository(pilot)
        await pilot.press("enter")  # the newest snapshot
        await settle(pilot)
        partitions = screen_text(app)
        assert '"root"' in partitions and '"data"' in partitions and "vfat" in partitions
        await choose_option(pilot, "images", "p2")
        await settle(pilot)
        assert "home/" in screen_text(app)
        await open_folder(pilot, "/home")
        await open_folder(pilot, "/home/ann")
        tree = app.screen.query_one("#tree", FileTree)
        thesis = tree.reveal(THESIS)
        assert thesis is not None
        tree.move_cursor(thesis)
        await pilot.press("enter")  # a file: its versions
        await settle(pilot)
        table = app.screen.query_one("#versions", DataTable)
        assert table.row_count == 2
        await pilot.press("space")  # marked for restoring
        await pilot.pause()
        shot(app, "restore-files-browse")
        assert THESIS in screen_text(app)
        # Search by name.
        await pilot.press("slash")
        await type_text(pilot, "thesis")
        await pilot.press("enter")
        await settle(pilot)
        assert THESIS in screen_text(app)
        shot(app, "restore-files-search")
        await pilot.press("escape")  # back from the search results
        await pilot.press("r")
        await restore_to(pilot, stick, "rescued")
        result = screen_text(app)
        shot(app, "restore-files-result")
        assert "The files are restored." in result, result
        # The older version, chosen in the versions panel.
        await pilot.click("#more")
        await settle(pilot)
        table = app.screen.query_one("#versions", DataTable)
        table.focus()
        table.move_cursor(row=1)  # newest first: row 1 is the first draft
        await pilot.press("enter")
        await restore_to(pilot, stick, "older")
        assert "The files are restored." in screen_text(app)
    assert not [m for m in mounts.mounts() if m.fstype.startswith("fuse.hourglass")]
    with mounted(stick.partition, tmp_path / "check") as root:
        assert (root / "rescued" / "thesis.txt").read_text() == "My thesis, second draft.\n"
        assert (root / "older" / "thesis.txt").read_text() == "My thesis, first draft.\n"
