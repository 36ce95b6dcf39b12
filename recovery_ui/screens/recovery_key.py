"""A new recovery key, shown once: the person writes it down. It is never logged."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button

from recovery_ui.i18n import _
from recovery_ui.screens.base import BaseDialog
from recovery_ui.widgets.controls import Label, Static


class RecoveryKeyDialog(BaseDialog[None]):
    DEFAULT_CSS = """
    RecoveryKeyDialog #key { text-style: bold; background: $boost; padding: 1 1;
                             margin: 1 0; }
    """

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(_("Your recovery key"), classes="dialog-title")
            yield Static(
                _(
                    "Write this key down on paper and keep it away from the backup drive. "
                    "It opens the repository like the passphrase. It is shown only now."
                ),
                markup=False,
            )
            yield Static(self.key, id="key", markup=False)
            with Horizontal(classes="buttons"):
                yield Button(
                    _("I have written it down"), id="done", compact=True, variant="primary"
                )

    def on_mount(self) -> None:
        self.query_one("#done", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)
