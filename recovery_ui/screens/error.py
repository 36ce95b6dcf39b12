"""An error the person must see: what happened (the engine's message) and what to do (its
hint). Never a traceback: that goes to the log."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical

from recovery_ui.i18n import N_, _
from recovery_ui.screens.base import BaseDialog
from recovery_ui.widgets.controls import Button, Label, Static


class ErrorDialog(BaseDialog[None]):
    DEFAULT_CSS = """
    ErrorDialog > .dialog { border: $hg-border $error; }
    ErrorDialog #message { color: $text; }
    ErrorDialog #hint { margin-top: 1; color: $text-warning; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", N_("Close"))]

    def __init__(self, message: str, hint: str = "", *, title: str = "") -> None:
        super().__init__()
        self.message = message
        self.hint = hint
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text or _("This did not work"), classes="dialog-title")
            yield Static(self.message, id="message", markup=False)
            if self.hint:
                yield Static(
                    _("What you can do: {hint}").format(hint=self.hint), id="hint", markup=False
                )
            with Horizontal(classes="buttons"):
                yield Button(_("OK"), id="ok", compact=True, variant="primary")

    def on_mount(self) -> None:
        self.query_one("#ok", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
