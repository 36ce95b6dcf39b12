"""The Repository screen: statistics, verify, forget with a preview and a typed
confirmation, a new passphrase, a recovery key; a wrong passphrase is a dialog."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from imaging.errors import PassphraseError
from imaging.repository.store import Repository
from recovery_ui.app import HourglassApp
from recovery_ui.widgets.controls import Static
from tests.conftest import PASSPHRASE
from tests.recovery_ui.conftest import Drive, screen_text, settle, shot
from tests.recovery_ui.flows import open_found_repository, type_text

pytestmark = [pytest.mark.integration, pytest.mark.root]


async def test_repository_maintenance(
    make_app: Callable[..., HourglassApp], backup_drive: Drive, tmp_path: Path
) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        # A wrong passphrase first: the engine's message in a dialog, and the chance to retry.
        await open_found_repository(pilot, "not the passphrase")
        dialog = screen_text(app)
        shot(app, "wrong-passphrase")
        assert "Wrong passphrase" in dialog and "Traceback" not in dialog
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
        # The same key as a QR code: what the app draws decodes, as a phone reads it, to
        # the key (Debian's zbarimg reads the screen's cells as pixels).
        await pilot.click("#show-qr")
        await pilot.pause()
        shot(app, "recovery-key-qr")
        drawn = str(app.screen.query_one("#qr", Static).render())
        assert decode_qr(drawn, tmp_path) == key
        assert app.screen.query_one("#key").display is False  # the text gives way to the code
        await pilot.click("#done")
        # Every secret stays out of the log.
        log = "\n".join(app.session_log.lines)
        for secret in (PASSPHRASE, "a better passphrase", key):
            assert secret not in log
        assert Repository.open(path, "a better passphrase")
        assert Repository.open(path, key)
        with pytest.raises(PassphraseError):
            Repository.open(path, PASSPHRASE)


def decode_qr(drawn: str, tmp: Path) -> str:
    """What zbarimg reads in block elements drawn light on dark (each cell two pixels high)."""
    light = {"█": (1, 1), "▀": (1, 0), "▄": (0, 1), " ": (0, 0)}
    rows: list[list[int]] = []
    for line in drawn.splitlines():
        rows += [[light[c][0] for c in line], [light[c][1] for c in line]]
    scale = 6
    pixels = [
        " ".join(("0" if lit else "1") for lit in row for _ in range(scale))  # PBM: 1 is black
        for row in rows
        for _ in range(scale)
    ]
    image = tmp / "qr.pbm"
    image.write_text(f"P1\n{len(rows[0]) * scale} {len(rows) * scale}\n" + "\n".join(pixels) + "\n")
    result = subprocess.run(
        ["zbarimg", "--raw", "-q", str(image)], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()
