"""The typed confirmation (issue 22, item 7): the field starts empty, the word to type stands
beside it, and Enter with nothing or a wrong word says why nothing happened."""

from __future__ import annotations

import pytest
from textual.widgets import Button, Input

from imaging.jobs.disks import Scope
from recovery_ui.app import HourglassApp
from recovery_ui.i18n import _, set_language
from recovery_ui.screens.confirm import TypedConfirmation
from recovery_ui.widgets.controls import Static
from tests.recovery_ui.conftest import screen_text, settle
from tests.recovery_ui.flows import type_text


def app_in(language: str) -> HourglassApp:
    return HourglassApp(
        language=language,
        scope=Scope(devices=("/dev/hourglass-no-such-disk",)),
        probe=False,
        watch_disks=False,
        load_settings=False,
    )


@pytest.mark.parametrize("language", ["en", "zh_CN"])
async def test_typed_confirmation_says_why_enter_did_nothing(language: str) -> None:
    app = app_in(language)
    answers: list[bool | None] = []
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        dialog = TypedConfirmation("Erase?", ["a disk"], "All is lost.", "sdz", "Erase")
        app.push_screen(dialog, answers.append)
        await settle(pilot)
        field = dialog.query_one("#typed", Input)
        assert field.value == "" and field.placeholder == "", "the field looks empty"
        assert "sdz" in str(dialog.query_one("#word", Static).content)
        why = dialog.query_one("#prompt", Static)
        prompt = str(why.content)
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is dialog and not answers
        assert str(why.content) == _("Nothing typed yet: type {word}, then press Enter.").format(
            word="sdz"
        )
        await type_text(pilot, "sdy")
        assert str(why.content) == prompt, "typing brings the prompt back"
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is dialog and not answers
        assert "sdy" in str(why.content) and "sdz" in str(why.content)
        assert "sdy" in screen_text(app)  # the reason is on the screen, not only in a widget
        assert dialog.query_one("#go", Button).disabled
        await pilot.press("backspace")
        await type_text(pilot, "z")
        assert not dialog.query_one("#go", Button).disabled
        await pilot.press("enter")
        await pilot.pause()
    set_language("en")
    assert answers == [True]
