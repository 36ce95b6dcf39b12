"""A yes-or-no question (for what is not destructive to a disk: those need the typed
confirmation of recovery_ui.screens.confirm)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button

from recovery_ui.i18n import N_, _
from recovery_ui.screens.base import BaseDialog
from recovery_ui.widgets.controls import Label, Static


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
