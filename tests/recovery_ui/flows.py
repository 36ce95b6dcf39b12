"""Driving the app like a person: keys, and waiting for the engine's work."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input, OptionList

from tests.conftest import PASSPHRASE
from tests.recovery_ui.conftest import screen_text, settle


async def choose_option(pilot: Pilot[Any], list_id: str, option_id: str) -> None:
    """Move the highlight of an option list with the arrow keys to ``option_id``, press Enter."""
    await highlight_option(pilot, list_id, option_id)
    await pilot.press("enter")


async def highlight_option(pilot: Pilot[Any], list_id: str, option_id: str) -> None:
    """Move the highlight of an option list with the arrow keys to ``option_id``."""
    widget = pilot.app.screen.query_one(f"#{list_id}", OptionList)
    widget.focus()
    await pilot.pause()
    if widget.highlighted is None:
        await pilot.press("down")
    for _ in range(widget.option_count + 1):
        highlighted = widget.highlighted
        if highlighted is not None and widget.get_option_at_index(highlighted).id == option_id:
            break
        await pilot.press("down")
    else:
        raise AssertionError(f"{option_id} is not in #{list_id}: {screen_text(pilot.app)}")


async def type_text(pilot: Pilot[Any], text: str) -> None:
    await pilot.press(*[{" ": "space"}.get(c, c) for c in text])


async def open_found_repository(pilot: Pilot[Any], passphrase: str = PASSPHRASE) -> None:
    """In the repository chooser: the repository found on the drive, and its passphrase."""
    await settle(pilot)
    await choose_option(pilot, "where", "found-0")
    await settle(pilot)
    await type_text(pilot, passphrase)
    await pilot.press("enter")
    await settle(pilot)


async def open_on_partition(pilot: Pilot[Any], partition: str, folder: str) -> None:
    """In the repository chooser: A folder on a partition -> ``partition`` -> ``folder`` ->
    the passphrase."""
    await choose_option(pilot, "where", "folder")
    await settle(pilot)
    await highlight_option(pilot, "partitions", f"part-{partition}")
    pilot.app.screen.query_one("#folder", Input).value = folder
    await pilot.click("#partition-next")
    await settle(pilot)
    await type_text(pilot, PASSPHRASE)
    await pilot.press("enter")
    await settle(pilot)


async def back_up_disk(pilot: Pilot[Any], device: str) -> None:
    """From the home screen: Back up, the disk ``device`` (all of it), Enter (Next): the
    repository chooser is shown."""
    await settle(pilot)
    await pilot.press("1")
    await settle(pilot)
    await choose_option(pilot, "disks", device)
    await settle(pilot)
