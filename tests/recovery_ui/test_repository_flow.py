"""The Repository screen: statistics, verify, forget with a preview and a typed
confirmation, a new passphrase, a recovery key; a wrong passphrase is a dialog."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from imaging.errors import PassphraseError
from imaging.repository.store import Repository
from recovery_ui.app import HourglassApp
from tests.conftest import PASSPHRASE
from tests.recovery_ui.conftest import Drive, screen_text, settle, shot
from tests.recovery_ui.flows import open_found_repository, type_text

pytestmark = [pytest.mark.integration, pytest.mark.root]


async def test_repository_maintenance(
    make_app: Callable[..., HourglassApp], backup_drive: Drive
) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        # A wrong passphrase first: the engine's message in a dialog, and the chance to retry.
        await open_found_repository(pilot, "not the passphrase")
        dialog = screen_text(app)
        shot(app, "wrong-passphrase")
        assert "does not open this repository" in dialog and "Traceback" not in dialog
        # What to check, in the app's words (issue 22, item 11).
        assert "Caps Lock" in dialog and "keyboard layout" in dialog and "recovery key" in dialog
        assert any("PassphraseError" in line for line in app.session_log.lines)
        await pilot.press("enter")  # OK
        await type_text(pilot, PASSPHRASE)
        await pilot.press("enter")
        await settle(pilot)
        stats = screen_text(app)
        shot(app, "repository-stats")
        assert "Backups: 2; of 1 disk" in stats, stats
        assert app.opened is not None
        path = app.opened.path

        await pilot.click("#tab-verify")
        await pilot.click("#verify-go")
        await settle(pilot)
        assert "No damage found." in screen_text(app)

        await pilot.click("#tab-forget")
        for name, value in (("last", "1"), ("daily", "0"), ("weekly", "0"), ("monthly", "0")):
            app.screen.query_one(f"#keep-{name}").value = value  # type: ignore[attr-defined]
        await pilot.click("#forget-preview")
        await settle(pilot)
        preview = screen_text(app)
        shot(app, "repository-forget-preview")
        assert "1 kept, 1 would be forgotten." in preview
        assert "GOES" in preview
        await pilot.click("#forget-go")
        await pilot.pause()
        assert "Forget these backups?" in screen_text(app)
        await type_text(pilot, "1")
        await pilot.press("enter")
        await settle(pilot)
        assert "Forgot 1 backup(s)" in screen_text(app)
        assert len(app.opened.repo.snapshots()) == 1

        await pilot.click("#tab-key")
        await type_text(pilot, "a better passphrase")
        await pilot.press("tab")
        await type_text(pilot, "a better passphrase")
        await pilot.click("#key-go")
        await settle(pilot)
        assert "The passphrase is changed." in screen_text(app)

        await pilot.click("#tab-recovery")
        await pilot.click("#recovery-go")
        await settle(pilot)
        shown = screen_text(app)
        shot(app, "recovery-key")
        match = re.search(r"HGRK(-[A-Z2-7]{4})+", shown)
        assert match, shown
        key = match.group(0)
        await pilot.press("enter")
        # Every secret stays out of the log.
        log = "\n".join(app.session_log.lines)
        for secret in (PASSPHRASE, "a better passphrase", key):
            assert secret not in log
        assert Repository.open(path, "a better passphrase")
        assert Repository.open(path, key)
        with pytest.raises(PassphraseError):
            Repository.open(path, PASSPHRASE)
