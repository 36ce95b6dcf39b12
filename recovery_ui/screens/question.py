"""A yes-or-no question (for what is not destructive to a disk: those need the typed
confirmation of recovery_ui.screens.confirm)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen

from imaging.jobs.repositories import GOOD_LENGTH, MIN_LENGTH
from recovery_ui.i18n import N_, _
from recovery_ui.screens.base import BaseDialog
from recovery_ui.screens.error import ErrorDialog
from recovery_ui.widgets.controls import Button, Label, Static


class Question(BaseDialog[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "no", N_("Cancel"))]

    def __init__(self, title: str, question: str, yes: str, no: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.question = question
        self.yes = yes
        self.no = no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.question, markup=False)
            with Horizontal(classes="buttons"):
                yield Button(self.no or _("Cancel"), id="no", compact=True)
                yield Button(self.yes, id="yes", compact=True, variant="warning")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_no(self) -> None:
        self.dismiss(False)


def judge_new_passphrase(screen: Screen[Any], secret: str, go: Callable[[], object]) -> None:
    """Call ``go`` for a new passphrase long enough; ask first for a short one (under
    ``GOOD_LENGTH`` characters); refuse one under ``MIN_LENGTH`` (a dialog)."""
    if len(secret) >= GOOD_LENGTH:
        go()
        return
    if len(secret) < MIN_LENGTH:
        screen.app.push_screen(
            ErrorDialog(
                _("The passphrase is too short: at least {count} characters are needed.").format(
                    count=MIN_LENGTH
                ),
                _("Longer is safer: {count} or more, such as a few words.").format(
                    count=GOOD_LENGTH
                ),
            )
        )
        return

    def answered(yes: bool | None) -> None:
        if yes:
            go()

    screen.app.push_screen(
        Question(
            _("A short passphrase"),
            _(
                "This passphrase has only {length} characters: anyone who gets the backup "
                "drive could guess it. {count} or more (a few words) are much safer."
            ).format(length=len(secret), count=GOOD_LENGTH),
            _("Use it anyway"),
            _("Choose another"),
        ),
        answered,
    )
