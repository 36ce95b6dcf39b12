"""The Repository screen: statistics, verify, forget with a preview and a typed
confirmation, a new passphrase, a recovery key; a wrong passphrase is a dialog."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from imaging.disks import mounts
from imaging.errors import PassphraseError
from imaging.repository.store import Repository
from imaging.units import decimal_size
from recovery_ui.app import HourglassApp
from recovery_ui.screens.home import HomeScreen
from recovery_ui.widgets.controls import Label, Static
from tests.conftest import PASSPHRASE
from tests.recovery_ui.conftest import Drive, mounted, screen_text, settle, shot
from tests.recovery_ui.flows import (
    choose_option,
    open_found_repository,
    open_on_partition,
    type_text,
)
from tests.support import MiB, write_random_image

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
        assert "2 backups; " in screen_text(app) and "read and checked (" in screen_text(app)

        await pilot.click("#tab-forget")
        for name, value in (("last", "1"), ("daily", "0"), ("weekly", "0"), ("monthly", "0")):
            app.screen.query_one(f"#keep-{name}").value = value  # type: ignore[attr-defined]
        await pilot.click("#forget-preview")
        await settle(pilot)
        preview = screen_text(app)
        shot(app, "repository-forget-preview")
        assert "1 kept, 1 would be forgotten." in preview
        assert "GOES" in preview
        # A changed policy makes the preview stale: Forget waits for a new one, and the
        # dialog then asks for the count the new preview shows (issue 22, item 10).
        app.screen.query_one("#keep-last").value = "2"  # type: ignore[attr-defined]
        await pilot.pause()
        assert app.screen.query_one("#forget-go").disabled
        assert "GOES" not in screen_text(app)
        await pilot.click("#forget-preview")
        await settle(pilot)
        assert "2 kept, 0 would be forgotten." in screen_text(app)
        assert app.screen.query_one("#forget-go").disabled
        app.screen.query_one("#keep-last").value = "1"  # type: ignore[attr-defined]
        await pilot.click("#forget-preview")
        await settle(pilot)
        summary = re.search(r"(\d+) kept, (\d+) would be forgotten\.", screen_text(app))
        assert summary and summary.group(2) == "1"
        await pilot.click("#forget-go")
        await pilot.pause()
        dialog = screen_text(app)
        assert "Forget these backups?" in dialog
        assert f"type {summary.group(2)} and press Enter" in dialog
        await type_text(pilot, "1")
        await pilot.press("enter")
        await settle(pilot)
        assert "Forgot 1 backup; freed" in screen_text(app)
        assert len(app.opened.repo.snapshots()) == 1

        await pilot.click("#tab-key")
        # Under 4 characters refused, under 8 asked about (issue 22, polish).
        slots = len(app.opened.repo.key_slots())
        for field in ("#key1", "#key2"):
            app.screen.query_one(field).value = "abc"  # type: ignore[attr-defined]
        await pilot.click("#key-go")
        await pilot.pause()
        assert "too short: at least 4 characters" in screen_text(app)
        await pilot.press("enter")  # OK
        await pilot.pause()
        for field in ("#key1", "#key2"):
            app.screen.query_one(field).value = "abcdef"  # type: ignore[attr-defined]
        await pilot.click("#key-go")
        await pilot.pause()
        assert "only 6 characters" in screen_text(app)
        await pilot.press("escape")  # choose another
        await settle(pilot)
        assert len(app.opened.repo.key_slots()) == slots, "nothing changed"
        for field in ("#key1", "#key2"):
            app.screen.query_one(field).value = ""  # type: ignore[attr-defined]
        await pilot.click("#key1")
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


def stored_bytes(repo_path: Path) -> int:
    """Bytes of every file in the repository (chunks, trash, tmp, indexes...)."""
    return sum(p.stat().st_size for p in repo_path.rglob("*") if p.is_file())


async def test_free_space_left_by_a_killed_backup(
    make_app: Callable[..., HourglassApp], backup_drive: Drive, tmp_path: Path
) -> None:
    """Issue 22, item 4: a backup killed before its commit leaves chunks on the drive; the
    Repository screen's "Free space left by failed backups" runs gc, with progress, says
    how much it freed, and the bytes on the drive drop by that much; the backups stay."""
    from tests.imaging.test_kill import kill_backup

    source = tmp_path / "big.img"
    write_random_image(source, 24 * MiB, seed=7, zero_every=0)
    with mounted(backup_drive.partition, tmp_path / "drive") as root:
        repo = Repository.open(root / "hourglass-backups", PASSPHRASE)
        before = stored_bytes(repo.path)
        kill_backup(repo, source, after=None)
        assert len(repo.snapshots()) == 2, "the killed backup recorded no snapshot"
        left = stored_bytes(repo.path) - before
    assert left > 1 * MiB, "the killed backup left data on the drive"

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await open_found_repository(pilot)
        assert app.opened is not None
        path = Path(app.opened.path)
        full = stored_bytes(path)
        await pilot.click("#tab-space")
        await settle(pilot)
        assert "Free space left by failed backups" in screen_text(app)
        await pilot.click("#gc-go")
        await settle(pilot)
        shown = screen_text(app)
        shot(app, "repository-free-space")
        match = re.search(r"Freed ([0-9.]+ [kMG]?B) on the drive\.", shown)
        assert match, shown
        after = stored_bytes(path)
        assert full - after > 1 * MiB, (full, after)
        logged = re.search(r"gc: freed \d+ chunks, (\d+) bytes", "\n".join(app.session_log.lines))
        assert logged, app.session_log.lines
        freed = int(logged.group(1))
        assert match.group(1) == decimal_size(freed)
        assert full - after >= freed >= left // 2, (left, full, after, freed)
        panel = app.screen.query_one("#gc-progress")
        assert panel.display
        # The progress ended on the sweep, every chunk on the drive looked at.
        phase = str(panel.query_one("#phase", Label).content)
        assert phase == "Setting aside pieces no backup uses", phase
        done = str(panel.query_one("#value-done", Label).content)
        counted = re.fullmatch(r"(\d+) of (\d+) stored pieces?", done)
        assert counted, done
        looked, of = (int(n) for n in counted.groups())
        assert looked == of > 1, done
        assert len(Repository.open(path, PASSPHRASE).snapshots()) == 2
        # Again: nothing left to free, and the button works with no backup to forget.
        await pilot.click("#gc-go")
        await settle(pilot)
        assert "Nothing to free" in screen_text(app)


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


@pytest.mark.parametrize(
    ("first", "second"),
    [("folder", "open"), ("folder", "typed"), ("found", "open")],
    ids=["own-mount-open-repository", "own-mount-typed-again", "probe-open-repository"],
)
async def test_a_drive_opened_to_read_is_opened_again_to_write(
    make_app: Callable[..., HourglassApp],
    backup_drive: Drive,
    tmp_path: Path,
    first: str,
    second: str,
) -> None:
    """Restore system opens a repository read-only; the Repository screen, which writes,
    then opens the same drive. Chosen as "The open repository", the drive is mounted again
    read-write and the passphrase is not asked again; typed again as a folder on the
    partition, the app's own read-only mount is mounted again read-write in the same place
    (it was refused as "mounted read-only... Unmount it"). Either way the drive is unmounted
    when the app quits. For "folder" the repository sits two folders down, where the probe
    does not look, so the app mounts the drive itself."""
    folder = "old/pc/hourglass-backups"
    if first == "folder":
        with mounted(backup_drive.partition, tmp_path / "move") as root:
            (root / "old/pc").mkdir(parents=True)
            (root / "hourglass-backups").rename(root / folder)
    name = os.path.basename(backup_drive.partition)
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("2")  # Restore system: the repository is only read
        await settle(pilot)
        if first == "folder":
            assert not app.found
            await open_on_partition(pilot, backup_drive.partition, folder)
        else:
            await open_found_repository(pilot)
        assert app.opened is not None and not app.opened.writable, screen_text(app)
        before = app.opened.location
        assert [m.read_only for m in mounts.mounts_of(name)] == [True]
        while not isinstance(app.screen, HomeScreen):
            await pilot.press("escape")
            await settle(pilot)

        await pilot.press("4")  # Repository: this one writes
        await settle(pilot)
        if second == "open":
            await choose_option(pilot, "where", "open")
            await settle(pilot)
        else:
            await open_on_partition(pilot, backup_drive.partition, folder)
        shown = screen_text(app)
        assert "Unmount it" not in shown and "Backups: 2; of 1 disk" in shown, shown
        assert app.opened is not None and app.opened.writable
        after = app.opened.location
        assert after is not None
        if before is not None:  # the app's own mount: the same place, read-write now
            assert after.mountpoint == before.mountpoint
        assert [(m.mountpoint, m.read_only) for m in mounts.mounts_of(name)] == [
            (after.mountpoint, False)
        ]
        assert (
            app.opened.path
            == f"{after.mountpoint}/{folder if first == 'folder' else 'hourglass-backups'}"
        )
        if second == "open":  # no passphrase typed: the keys already unlocked were used
            assert any("mounted again read-write" in line for line in app.session_log.lines)
        await pilot.click("#tab-verify")
        await pilot.click("#verify-go")
        await settle(pilot)
        assert "No damage found." in screen_text(app)
    assert not mounts.mounts_of(name), "the app left the drive mounted"
