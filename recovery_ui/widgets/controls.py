"""Controls drawn with the glyphs of the terminal in use (recovery_ui.console)."""

from __future__ import annotations

from textual.widgets import Checkbox

from recovery_ui.console import glyphs_of


class SafeCheckbox(Checkbox):
    """A checkbox whose box is drawn with glyphs the terminal has."""

    def on_mount(self) -> None:
        glyphs = glyphs_of(self.app)
        self.BUTTON_LEFT = glyphs.check_left
        self.BUTTON_INNER = glyphs.check_inner
        self.BUTTON_RIGHT = glyphs.check_right
        self.refresh()


def checkbox(label: str, value: bool = False, *, id: str | None = None) -> SafeCheckbox:
    return SafeCheckbox(label, value, id=id, compact=True)
