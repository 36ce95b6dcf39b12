"""Issue 22, item 1: the disk list settles while loop devices come and go every 0.3 s.

Real loop devices: the PC's disk (an ESP and two ext4 partitions) and, beside it in the app's
scope, a loop device attached and detached over and over by a background thread."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.widgets import OptionList

from imaging.disks import facts, sysfs
from recovery_ui.app import HourglassApp
from recovery_ui.console import Terminal
from recovery_ui.screens.home import HomeScreen
from recovery_ui.screens.logs import LogsScreen
from recovery_ui.widgets.disk_map import DiskMap
from tests.recovery_ui.conftest import Source, screen_text, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.slow]

LINUX = Terminal("linux", False, "tests")
GAPS = (0.45, 0.15, 0.35)  # seconds from one event to the next, around the debounce


class Churn:
    """A loop device over ``image`` attached, then detached, again and again: about every
    0.3 s, with some pauses longer than the app's debounce and some shorter."""

    def __init__(self, image: Path) -> None:
        self.image = image
        self.stop = threading.Event()
        self.cycles = 0
        self.thread = threading.Thread(target=self._run, name="churn", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            attached = subprocess.run(
                ["losetup", "--show", "--find", str(self.image)], capture_output=True, text=True
            )
            device = attached.stdout.strip()
            self.stop.wait(GAPS[self.cycles % len(GAPS)])
            if device:
                subprocess.run(["losetup", "--detach", device], check=False)
                self.cycles += 1
            self.stop.wait(GAPS[(self.cycles + 1) % len(GAPS)])


@pytest.fixture
def churn(tmp_path: Path) -> Iterator[Churn]:
    image = tmp_path / "churn.img"
    image.write_bytes(b"\0" * (2 * 1024 * 1024))
    running = Churn(image)
    running.thread.start()
    try:
        yield running
    finally:
        running.stop.set()
        running.thread.join(timeout=10)
        for name in sysfs.disk_names():  # a device the thread left attached
            if name.startswith("loop") and sysfs.backing_file(name) == str(image):
                subprocess.run(["losetup", "--detach", f"/dev/{name}"], check=False)


async def test_the_disk_list_settles_while_loop_devices_churn(
    make_app: Callable[..., HourglassApp], source: Source, churn: Churn
) -> None:
    facts.CACHE.clear()
    app = make_app(watch_disks=True, terminal=LINUX)
    started = time.monotonic()
    async with app.run_test(size=(80, 24)) as pilot:
        assert app._watcher is not None, "no netlink here"
        await wait_for(pilot, lambda: source.device in screen_text(app), 30, "the PC's disk")
        print(f"the PC's disk was shown after {time.monotonic() - started:.2f} s")
        home = app.screen
        assert isinstance(home, HomeScreen)
        picture = next(w for w in home.query(DiskMap) if w.disk.device == source.device)

        # Keys are handled during the churn: the menu moves, Logs opens and closes.
        menu = home.query_one("#menu", OptionList)
        before = menu.highlighted
        pressed = time.monotonic()
        await pilot.press("down")
        await wait_for(pilot, lambda: menu.highlighted != before, 10, "the menu to move")
        print(f"a key during the churn took {time.monotonic() - pressed:.3f} s")
        await pilot.press("7")
        await wait_for(pilot, lambda: isinstance(app.screen, LogsScreen), 10, "the Logs screen")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is home, 10, "home again")

        # The PC's disk stays on the screen while the churn goes on.
        cycles = churn.cycles
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline or churn.cycles < cycles + 8:
            assert source.device in screen_text(app), "the PC's disk went from the list"
            await pilot.pause(0.2)
        churn.stop.set()
        churn.thread.join(timeout=10)
        await wait_for(pilot, lambda: not app._listing, 30, "the listing to settle")

        # The unchanged disk's picture was never made again, and its partitions were probed
        # once each (blkid; partclone for the ESP's used size) however often disks came.
        assert any(w is picture for w in home.query(DiskMap))
        for number in (1, 2, 3):
            assert facts.CACHE.probes[("blkid", f"{source.device}p{number}")] == 1
        assert facts.CACHE.probes[("used", f"{source.device}p1")] == 1
        assert churn.cycles >= 8
        # F5 lists everything again, still without probing unchanged partitions again.
        await pilot.press("f5")
        await pilot.pause(0.1)
        await wait_for(pilot, lambda: not app._listing, 30, "the listing after F5")
        assert facts.CACHE.probes[("blkid", f"{source.device}p1")] == 1
        assert source.device in screen_text(app)
        print(f"{churn.cycles} loop devices came and went; probes: {dict(facts.CACHE.probes)}")
