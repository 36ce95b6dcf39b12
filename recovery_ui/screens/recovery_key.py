"""A new recovery key, shown once: the person writes it down or photographs it (as text, or
as a QR code where the console can draw one). It is never logged."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical

from recovery_ui.i18n import _
from recovery_ui.screens.base import BaseDialog
from recovery_ui.widgets import qr
from recovery_ui.widgets.controls import Button, Label, Static


class RecoveryKeyDialog(BaseDialog[None]):
    DEFAULT_CSS = """
    RecoveryKeyDialog #key { text-style: bold; background: $boost; padding: 1 1;
                             margin: 1 0; }
    RecoveryKeyDialog #qr { width: auto; color: white; background: black; display: none; }
    RecoveryKeyDialog.-qr #qr { display: block; }
    RecoveryKeyDialog.-qr #why, RecoveryKeyDialog.-qr #key { display: none; }
    """

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(_("Your recovery key"), classes="dialog-title")
            yield Static(
                _(
                    "Write this key down or photograph it, and keep it away from the backup "
                    "drive. It opens the repository like the passphrase. It is shown only now."
                ),
                id="why",
                markup=False,
            )
            yield Static(self.key, id="key", markup=False)
            if self._can_draw_qr():
                yield Static(qr.draw(self.key), id="qr", markup=False)
            with Horizontal(classes="buttons"):
                yield Button(
                    _("I have written it down"), id="done", compact=True, variant="primary"
                )
                if self._can_draw_qr():
                    yield Button(_("Show a QR code"), id="show-qr", compact=True)

    def _can_draw_qr(self) -> bool:
        """Block elements are drawn by terminal emulators and the Linux console; a serial
        line's far end may show them as anything."""
        terminal = getattr(self.app, "terminal", None)
        return terminal is None or terminal.kind != "serial"

    def on_mount(self) -> None:
        self.query_one("#done", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "show-qr":
            shown = not self.has_class("-qr")
            self.set_class(shown, "-qr")
            event.button.label = _("Show as text") if shown else _("Show a QR code")
            return
        self.dismiss(None)
