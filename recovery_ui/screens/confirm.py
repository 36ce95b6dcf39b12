"""The confirmation of a destructive step: it names the disk by model, serial, size and
everything on it, and goes ahead only when the person types the word it asks for. The field
starts empty (a placeholder showing the word made it look filled in), the word stands beside
it, and Enter with anything else says why nothing happened."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input

from recovery_ui.i18n import N_, _
from recovery_ui.screens.base import BaseDialog
from recovery_ui.widgets.controls import Button, Label, Static


class TypedConfirmation(BaseDialog[bool]):
    DEFAULT_CSS = """
    TypedConfirmation > .dialog { border: $hg-border $error; width: 90; }
    TypedConfirmation #what { height: auto; max-height: 12; background: $boost; padding: 0 1; }
    TypedConfirmation #warning { color: $text-error; text-style: bold; margin-top: 1; }
    TypedConfirmation #prompt { margin-top: 1; }
    TypedConfirmation #typed-row { height: auto; }
    TypedConfirmation Input { width: 30; }
    TypedConfirmation #word { width: auto; padding: 0 1; text-style: bold; }
    TypedConfirmation #prompt.why { color: $text-error; text-style: bold; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", N_("Cancel"))]

    def __init__(self, title: str, lines: list[str], warning: str, word: str, action: str) -> None:
        super().__init__()
        self.title_text = title
        self.lines = lines
        self.warning = warning
        self.word = word
        self.action = action

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            with VerticalScroll(id="what"):
                yield Static("\n".join(self.lines), markup=False)
            yield Static(self.warning, id="warning", markup=False)
            yield Static(self._prompt(), id="prompt", markup=False)
            with Horizontal(id="typed-row"):
                yield Input(id="typed", compact=True)
                yield Static(_("<- type {word}").format(word=self.word), id="word", markup=False)
            with Horizontal(classes="buttons"):
                yield Button(_("Cancel"), id="cancel", compact=True)
                yield Button(self.action, id="go", compact=True, variant="error", disabled=True)

    def on_mount(self) -> None:
        self.query_one("#typed", Input).focus()

    def _matches(self) -> bool:
        return self.query_one("#typed", Input).value.strip() == self.word

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#go", Button).disabled = not self._matches()
        self._say(self._prompt(), why=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self._matches():
            self.dismiss(True)
            return
        typed = event.value.strip()
        self._say(
            _("Nothing typed yet: type {word}, then press Enter.").format(word=self.word)
            if not typed
            else _("{typed} is not {word}: type {word} exactly, then press Enter.").format(
                typed=typed, word=self.word
            ),
            why=True,
        )

    def _prompt(self) -> str:
        return _("To go ahead, type {word} and press Enter.").format(word=self.word)

    def _say(self, line: str, *, why: bool) -> None:
        # The reason takes the prompt's line: a line more would push the buttons off 80x24.
        prompt = self.query_one("#prompt", Static)
        prompt.update(line)
        prompt.set_class(why, "why")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "go" and self._matches())

    def action_cancel(self) -> None:
        self.dismiss(False)
