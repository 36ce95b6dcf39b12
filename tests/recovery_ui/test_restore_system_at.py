"""Restore system as of a second: a time typed to the second in a repository with the agent's
file journal restores the newest image at or before it, then puts back the files saved after
it up to that second; the plan is shown before the typed confirmation, the result after."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imaging.repository import keys
from imaging.repository.store import Repository
from recovery_ui.app import HourglassApp
from tests.conftest import PASSPHRASE, WEAK_KDF
from tests.imaging.agent.recording import FIRST, Recorded, blank_disk, files_on, record
from tests.recovery_ui.conftest import Part, disk, mounted, screen_text, settle, shot
from tests.recovery_ui.flows import choose_option, open_found_repository, type_text
from tests.support import sh


def words(app: HourglassApp) -> str:
    """The screen's text with its line breaks and runs of spaces as single spaces."""
    return " ".join(screen_text(app).split())


pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def recorded_drive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    """The recorded PC's repository (encrypted) on a USB backup drive the app finds."""
    monkeypatch.setattr(keys, "PASSPHRASE_KDF", WEAK_KDF)
    work = tmp_path / "pc"
    work.mkdir()
    repo_dir = work / "hourglass-backups"
    Repository.init(repo_dir, passphrase=PASSPHRASE)
    passphrase = work / "passphrase"
    passphrase.write_text(PASSPHRASE)
    recorded = record(work, repo_dir, passphrase)
    with disk(tmp_path / "drive.img", [Part(1, "ext4", 300, "BACKUP")], 310) as device:
        with mounted(f"{device}p1", tmp_path / "fill") as root:
            sh("cp", "-a", repo_dir, root)
        yield recorded


@pytest.fixture
def empty_disk(tmp_path: Path) -> Iterator[str]:
    with blank_disk(tmp_path) as device:
        yield device


async def test_restore_system_as_of_a_second(
    make_app: Callable[..., HourglassApp],
    recorded_drive: Recorded,
    empty_disk: str,
    tmp_path: Path,
) -> None:
    at = recorded_drive.seconds["first"]
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await open_found_repository(pilot)
        await pilot.click("#typed")
        await type_text(pilot, at)
        await pilot.press("enter")
        await settle(pilot)
        chosen = words(app)
        assert f"Then the files saved until {at} are put back" in chosen, chosen
        await pilot.click("#when-next")
        await settle(pilot)
        await choose_option(pilot, "targets", empty_disk)
        await settle(pilot, timeout=120)
        checked = words(app)
        shot(app, "restore-system-at-target")
        assert "The backup fits on this disk." in checked, checked
        assert f"put back as they were at {at}" in checked, checked
        await pilot.click("#restore")
        await settle(pilot)
        confirm = words(app)
        shot(app, "restore-system-at-confirm")
        assert empty_disk in confirm and f"put back as they were at {at}" in confirm, confirm
        assert re.search(r"of \S+: \d+ written \(.*\), [1-9]\d* removed", confirm), confirm
        await type_text(pilot, os.path.basename(empty_disk))
        await pilot.press("enter")
        await settle(pilot, timeout=180)
        result = words(app)
        shot(app, "restore-system-at-result")
        assert "The system is restored." in result, result
        assert "From the file journal: Replayed the file journal of" in result, result
    assert files_on(empty_disk, tmp_path / "check") == FIRST
