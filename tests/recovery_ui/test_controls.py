"""The app's controls as a person reads them: checkboxes and selection lists tell on from off
without colour (the serial console is monochrome, and a dimmed mark there looks like a ticked
one), the focused one is marked where colour may not show, and progress names its unit."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from imaging.progress import Progress
from recovery_ui import i18n
from recovery_ui.console import Terminal
from recovery_ui.widgets.controls import OFF, Check, Choices, Label, Secret
from recovery_ui.widgets.progress_panel import ProgressPanel
from recovery_ui.widgets.steps import Steps


@pytest.fixture(autouse=True)
def english() -> None:
    """These apps are not Hourglass's: nothing sets the language, and an app test run before
    in this process may have left Chinese."""
    i18n.set_language(i18n.ENGLISH)


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


class SerialBoxes(App[None]):
    terminal = Terminal("serial", False, "tests")

    def compose(self) -> ComposeResult:
        yield Check("first", True, id="first")
        yield Check("second", False, id="second")


async def test_a_focused_checkbox_is_marked_without_colour() -> None:
    """On a console that may be monochrome the focused checkbox has the mark before it."""
    app = SerialBoxes()
    async with app.run_test(size=(40, 6)) as pilot:
        first, second = app.query_one("#first", Check), app.query_one("#second", Check)
        first.focus()
        await pilot.pause()
        left, right, mark = Check.BUTTON_LEFT, Check.BUTTON_RIGHT, Check.BUTTON_INNER
        assert str(first.render()).startswith(f"> {left}{mark}{right} first"), first.render()
        assert str(second.render()).startswith(f"  {left}{OFF}{right} second")
        await pilot.press("tab")
        await pilot.pause()
        assert app.focused is second
        assert str(first.render()).startswith(f"  {left}{mark}")
        assert str(second.render()).startswith(f"> {left}{OFF}")


class SerialSecret(App[None]):
    terminal = Terminal("serial", False, "tests")

    def compose(self) -> ComposeResult:
        yield Secret(password=True, value="s3cret", id="secret", compact=True)


async def test_a_password_on_a_serial_console_is_masked_in_ascii() -> None:
    """Textual masks with "•", which a terminal of ASCII only may not draw: the field would
    look empty while it holds the passphrase."""
    app = SerialSecret()
    async with app.run_test(size=(30, 3)) as pilot:
        await pilot.pause()
        row = "".join(s.text for s in app.query_one("#secret", Secret).render_line(0))
        assert row.startswith("******") and "•" not in row and "s3cret" not in row, row


SIX = ["Repository", "When", "Partition", "Files", "Destination", "Result"]


class SixSteps(App[None]):
    def compose(self) -> ComposeResult:
        yield Steps(SIX, id="steps")


@pytest.mark.parametrize("width", [80, 60, 120])
async def test_the_steps_line_fits_its_width(width: int) -> None:
    """Six steps need 86 columns padded: narrower, the padding goes, then the names of the
    steps the person is not at; every step's number stays, and the current step's name."""
    app = SixSteps()
    async with app.run_test(size=(width, 3)) as pilot:
        steps = app.query_one("#steps", Steps)
        steps.current = 2
        await pilot.pause()
        line = str(steps.render())
        assert len(line) <= width - 2, line  # its padding: one column either side
        assert all(f"{n} " in line for n in range(1, 6)) and line.rstrip().endswith(("6", "Result"))
        assert "3 Partition" in line
        if width >= 86 + 2:
            assert all(name in line for name in SIX), line


class Panel(App[None]):
    def compose(self) -> ComposeResult:
        yield ProgressPanel()


async def test_a_phase_that_counts_pieces_says_so() -> None:
    """The check after a backup counts stored pieces, not bytes: "149 of 484", with the unit."""
    app = Panel()
    async with app.run_test(size=(80, 12)) as pilot:
        panel = app.query_one(ProgressPanel)
        panel.set_phase("Checking the backup", counts_bytes=False)
        panel.show(Progress("verify", 149, 484, 1.0, rate=149.0, eta=2.2))
        await pilot.pause()
        done = str(app.query_one("#value-done", Label).render())
        assert done == "149 of 484 stored pieces", done
        panel.set_phase("Reading", counts_bytes=True)
        panel.show(Progress("backup", 2_000_000, 4_000_000, 1.0, rate=2e6, eta=1.0))
        await pilot.pause()
        assert str(app.query_one("#value-done", Label).render()) == "2.0 MB / 4.0 MB"
