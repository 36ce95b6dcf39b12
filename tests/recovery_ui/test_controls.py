"""Checkboxes and selection lists tell on from off without colour (issue 22, item 9): the
serial console is monochrome, and a dimmed mark there looks like a ticked one."""

from __future__ import annotations

from textual.app import App, ComposeResult

from recovery_ui.widgets.controls import OFF, Check, Choices


class Boxes(App[None]):
    def compose(self) -> ComposeResult:
        yield Check("on", True, id="on")
        yield Check("off", False, id="off")
        yield Choices[int](("first", 1, True), ("second", 2, False), id="list")


async def test_an_unticked_box_is_empty_and_a_ticked_one_is_marked() -> None:
    app = Boxes()
    async with app.run_test(size=(40, 8)) as pilot:
        on, off = app.query_one("#on", Check), app.query_one("#off", Check)
        mark = type(on).BUTTON_INNER
        assert mark.strip() and mark != OFF
        assert mark in str(on.render()) and mark not in str(off.render()), str(off.render())
        off.toggle()
        await pilot.pause()
        assert mark in str(off.render())  # ticking it draws the mark
        choices = app.query_one("#list", Choices)
        first, second = ("".join(s.text for s in choices.render_line(y)) for y in (0, 1))
        assert first.lstrip().startswith(f"{on.BUTTON_LEFT}{mark}"), first
        assert f"{on.BUTTON_LEFT}{OFF}{on.BUTTON_RIGHT}" in second, second
        choices.select(2)
        await pilot.pause()
        assert mark in "".join(s.text for s in choices.render_line(1))
