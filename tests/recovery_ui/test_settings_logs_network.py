"""Settings saved on the backup drive and used at the next start, the session log on the
drive, the Network screen against interfaces in a namespace, disks plugged in while the app
runs, the shell and the power actions outside the appliance."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imaging.appliance import network
from recovery_ui import i18n
from recovery_ui.app import HourglassApp
from recovery_ui.console import Terminal
from tests.recovery_ui.conftest import (
    Drive,
    Part,
    disk,
    mounted,
    screen_text,
    settle,
    shot,
    wait_for,
)
from tests.recovery_ui.flows import choose_option, type_text

pytestmark = [pytest.mark.integration, pytest.mark.root]


async def test_language_saved_on_the_drive_and_used_at_the_next_start(
    make_app: Callable[..., HourglassApp], backup_drive: Drive, tmp_path: Path
) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("6")
        await settle(pilot)
        await choose_option(pilot, "language", "zh_CN")
        await settle(pilot)
        assert i18n.current() == "zh_CN"
        chinese = screen_text(app)
        shot(app, "settings-zh")
        assert "语言" in chinese  # the Settings screen came back, in Chinese
        await pilot.click("#save")
        await settle(pilot)
        assert "settings.json" in screen_text(app)
    with mounted(backup_drive.partition, tmp_path / "drive") as root:
        saved = json.loads((root / "hourglass" / "settings.json").read_text())
        assert saved == {"language": "zh_CN", "theme": "dark"}
        logs = list((root / "hourglass" / "logs").glob("hourglass-*.log"))
        assert logs and "settings saved to" in logs[0].read_text()
    # The next start reads them from the drive (English asked for by the environment).
    app = make_app(load_settings=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await wait_for(pilot, lambda: i18n.current() == "zh_CN", what="Chinese")
        await settle(pilot)
        assert "备份" in screen_text(app)


async def test_chinese_falls_back_to_english_on_the_linux_console(
    make_app: Callable[..., HourglassApp],
) -> None:
    app = make_app(terminal=Terminal("linux", False, "tests"), language="zh_CN")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert i18n.current() == "en"
        assert "Back up" in screen_text(app)
        await pilot.press("6")
        await settle(pilot)
        assert "cannot show Chinese characters" in screen_text(app)


async def test_log_screen_shows_the_session(make_app: Callable[..., HourglassApp]) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("7")
        await settle(pilot)
        text = screen_text(app)
        assert "Hourglass app started" in text
        assert "not on a drive yet" in text


async def test_a_disk_plugged_in_appears(
    make_app: Callable[..., HourglassApp], tmp_path: Path
) -> None:
    """A disk plugged in shows on the home screen, and goes when unplugged. The target is
    two seconds; the time is printed, not asserted (a loaded CI machine is no place for a
    timed assertion)."""
    app = make_app(watch_disks=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app._watcher is not None, "no netlink here"
        plugged = time.monotonic()
        with disk(tmp_path / "usb.img", [Part(1, "ext4", 20, "NEWDISK")], 24) as device:
            await wait_for(
                pilot,
                lambda: device in screen_text(app),
                timeout=30,
                what=f"the new disk {device}",
            )
            appeared = time.monotonic() - plugged
            print(f"the new disk appeared {appeared:.2f} s after it was plugged in")
            await settle(pilot)
            assert "NEWDISK" in screen_text(app)
            subprocess.run(["partx", "--delete", device], check=False)
        # Unplugged: it goes away again.
        await wait_for(pilot, lambda: device not in screen_text(app), timeout=30, what="removal")


@pytest.fixture
def netns() -> Iterator[str]:
    if not shutil.which("ip"):
        pytest.skip("needs iproute2")
    name = f"hg-ui-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "add", "eth7", "type", "veth", "peer", "name", "eth8"],
            check=True,
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


async def test_network_fixed_address(make_app: Callable[..., HourglassApp], netns: str) -> None:
    app = make_app(netns=netns)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        assert "eth7" in screen_text(app) and "eth8" in screen_text(app)
        app.screen.query_one("#interfaces").focus()
        for _ in range(3):
            if "Address of eth7" in screen_text(app):
                break
            await pilot.press("down")
        assert "Address of eth7" in screen_text(app)
        await choose_option(pilot, "mode", "static")
        await pilot.click("#address")
        await type_text(pilot, "10.99.0.5/24")
        await pilot.click("#gateway")
        await type_text(pilot, "10.99.0.1")
        await pilot.click("#apply")
        await settle(pilot)
        shot(app, "network")
        assert "has the address 10.99.0.5/24" in screen_text(app)
        assert "10.99.0.5/24" in screen_text(app)  # the table was read again
        # A typed mistake is the engine's message in a dialog.
        await pilot.click("#address")
        await pilot.press("ctrl+a", "ctrl+k")
        await type_text(pilot, "10.99.0.300")
        await pilot.click("#apply")
        await settle(pilot)
        assert "is not an IP address" in screen_text(app), screen_text(app)
    first = next(i for i in network.interfaces(netns=netns) if i.name == "eth7")
    assert first.addresses == ("10.99.0.5/24",)
    assert first.gateway == "10.99.0.1"


async def test_shell_and_power_outside_the_appliance(
    make_app: Callable[..., HourglassApp],
) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("0")
        await pilot.pause()
        assert "Turn the computer off now?" in screen_text(app)
        await pilot.click("#yes")
        await settle(pilot)
        assert "only done on the Hourglass appliance" in screen_text(app)
        await pilot.press("enter")
        await pilot.press("8")  # no terminal to hand over under the test pilot
        await settle(pilot)
        assert "This did not work" in screen_text(app)
