"""Back up through the app: a real disk into a real repository on a real backup drive."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.widgets import OptionList

from imaging.repository.store import Repository
from recovery_ui.app import HourglassApp
from tests.conftest import PASSPHRASE
from tests.recovery_ui.conftest import Drive, Source, screen_text, settle, shot

pytestmark = [pytest.mark.integration, pytest.mark.root]


async def choose_option(pilot, list_id: str, option_id: str) -> None:  # type: ignore[no-untyped-def]
    """Move the highlight of an option list with the arrow keys to ``option_id``, press Enter."""
    widget = pilot.app.screen.query_one(f"#{list_id}", OptionList)
    widget.focus()
    await pilot.pause()
    for _ in range(widget.option_count + 1):
        if (
            widget.highlighted is not None
            and widget.get_option_at_index(widget.highlighted).id == option_id
        ):
            break
        await pilot.press("down")
    else:
        raise AssertionError(f"{option_id} not in #{list_id}")
    await pilot.press("enter")


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
        await pilot.press("1")
        await settle(pilot)
        await choose_option(pilot, "disks", source.device)
        shot(app, "backup-1-source")
        await pilot.click("#source-next")
        await settle(pilot)
        # The repository chooser: the one found on the drive, then its passphrase.
        assert "Where should the backup go?" in screen_text(app)
        shot(app, "backup-2-choose")
        await choose_option(pilot, "where", "found-0")
        await settle(pilot)
        shot(app, "backup-3-unlock")
        await pilot.press(*PASSPHRASE)
        await pilot.press("enter")
        await settle(pilot)
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
