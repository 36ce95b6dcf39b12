"""A branded appliance: the vendor file names the product, its colours, the language the app
starts in and the repository it offers first. Without one the app is Hourglass as ever."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from textual.color import Color
from textual.pilot import Pilot
from textual.widgets import Input, OptionList

from imaging.appliance.vendor import VENDOR_FILE_VARIABLE
from imaging.repository.store import Repository
from recovery_ui import i18n
from recovery_ui.app import VENDOR_THEME, HourglassApp
from recovery_ui.screens.choose_repository import ChooseRepository
from recovery_ui.widgets.title_bar import TitleBar
from tests.conftest import PASSPHRASE
from tests.recovery_ui.conftest import screen_text, settle, shot
from tests.recovery_ui.flows import type_text

REPOSITORY = Path(__file__).resolve().parents[2]
ACME_BLUE = "#1b4f9c"


def vendor_file(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "vendor.toml"
    path.write_text(text)
    monkeypatch.setenv(VENDOR_FILE_VARIABLE, str(path))
    return path


async def choose_highlighted(app: HourglassApp, pilot: Pilot[int], shot_name: str = "") -> str:
    """Open the repository chooser, press Enter on the entry it highlights; that entry's id."""
    await app.push_screen(ChooseRepository("Open a repository"))
    await settle(pilot)
    if shot_name:
        shot(app, shot_name)
    where = app.screen.query_one("#where", OptionList)
    assert where.highlighted is not None
    chosen = str(where.get_option_at_index(where.highlighted).id)
    where.focus()
    await pilot.press("enter")
    return chosen


async def test_the_vendors_name_and_colours(
    make_app: Callable[..., HourglassApp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor_file(
        tmp_path,
        f'[product]\nname = "Acme Restore"\n[colours]\nprimary = "{ACME_BLUE}"\n',
        monkeypatch,
    )
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        shot(app, "vendor-home")
        assert screen_text(app).splitlines()[0].startswith("Acme Restore 0.1.0  ")
        assert app.theme == VENDOR_THEME
        assert app.current_theme.primary == ACME_BLUE
        assert app.screen.query_one(TitleBar).styles.background == Color.parse(ACME_BLUE)
        # Light, chosen in Settings, is Textual's; dark is the vendor's again.
        app.set_theme_choice("light")
        assert app.theme == "textual-light"
        app.set_theme_choice("dark")
        assert app.theme == VENDOR_THEME


async def test_the_default_vendor_file_keeps_the_standard_look(
    make_app: Callable[..., HourglassApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default build writes a vendor file with the documented defaults."""
    monkeypatch.setenv(VENDOR_FILE_VARIABLE, str(REPOSITORY / "image" / "vendor.toml"))
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert screen_text(app).splitlines()[0].startswith("Hourglass 0.1.0  ")
        assert app.theme == "textual-dark"


async def test_the_vendors_language_until_the_person_chooses(
    make_app: Callable[..., HourglassApp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor_file(tmp_path, '[defaults]\nlanguage = "zh_CN"\n', monkeypatch)
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    app = make_app(language=None)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.wanted_language == i18n.CHINESE and i18n.current() == i18n.CHINESE
        assert "设置" in screen_text(app)  # Settings, on the home screen


async def test_the_vendors_repository_is_offered_first(
    make_app: Callable[..., HourglassApp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "acme-backups"
    Repository.init(path, passphrase=PASSPHRASE)
    vendor_file(tmp_path, f'[defaults]\nrepository = "{path}"\n', monkeypatch)
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert await choose_highlighted(app, pilot, shot_name="vendor-repository") == "vendor"
        await settle(pilot)
        await type_text(pilot, PASSPHRASE)
        await pilot.press("enter")
        await settle(pilot)
        assert app.opened is not None and app.opened.path == str(path)


@pytest.mark.root
@pytest.mark.integration  # mounts a tmpfs
def test_the_vendors_repository_among_found_ones(tmp_path: Path) -> None:
    """``label:LABEL/path`` is a repository found at that path of the labelled filesystem;
    ``smb://server/share/path`` one on that share."""
    from imaging.appliance.vendor import RepositoryHint
    from imaging.disks.model import Disk, Partition
    from imaging.disks.repos import FoundRepository
    from imaging.mounts.locations import Location
    from recovery_ui.screens.choose_repository import vendor_choice
    from tests.support import sh

    label = Partition(1, "/dev/sdz1", 0, 10**9, "", "", label="ACME")
    drive = Disk("/dev/sdz", "", "USB", "X1", 10**9, 512, 512, "usb", True, False, "gpt", (label,))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sh("mount", "-t", "tmpfs", "none", mnt)
    try:
        found = {"found-0": FoundRepository(str(mnt / "other"), "/dev/sdz", 1)}
        found["found-1"] = FoundRepository(str(mnt / "backups"), "/dev/sdz", 1)
        hint = RepositoryHint("label", "ACME", "/backups")
        assert vendor_choice(hint, found, [drive]) == "found-1"
        assert vendor_choice(RepositoryHint("label", "OTHER", "/backups"), found, [drive]) == ""
    finally:
        sh("umount", mnt)
    share = Location("smb", "//nas/backups", mountpoint=str(mnt), writable=True, mounted_by_us=True)
    shared = {"share-0": (share, str(mnt / "pc1")), "share-1": (share, str(mnt / "hourglass"))}
    hint = RepositoryHint("smb", "NAS", "backups/hourglass")
    assert vendor_choice(hint, shared, []) == "share-1"
    assert vendor_choice(None, shared, []) == ""


async def test_the_vendors_share_is_filled_in(
    make_app: Callable[..., HourglassApp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor_file(tmp_path, '[defaults]\nrepository = "smb://nas/backups/hourglass"\n', monkeypatch)
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert await choose_highlighted(app, pilot) == "share"
        await settle(pilot)
        assert app.screen.query_one("#host", Input).value == "nas"
        assert app.screen.query_one("#path", Input).value == "backups/hourglass"
        assert app.screen.query_one("#kind", OptionList).highlighted == 0  # SMB
