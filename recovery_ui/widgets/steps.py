"""The line that says where a flow is: ``1 Source > 2 Repository > 3 Check > ...``."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive

from recovery_ui.console import glyphs_of
from recovery_ui.widgets.controls import Static


class Steps(Static):
    DEFAULT_CSS = """
    Steps { height: 1; padding: 0 1; color: $text-muted; }
    """

    current: reactive[int] = reactive(0)
    """Index of the step the person is at."""
    skipped: reactive[frozenset[int]] = reactive(frozenset())
    """Indexes of steps this way through does not take: not drawn, the others numbered on."""

    def __init__(self, names: list[str], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.names = names

    def render(self) -> Text:
        """All steps with their names; where that is too wide (six steps at 80 columns), the
        steps without their padding, then only the current step's name."""
        width = self.content_region.width
        for form in ("padded", "tight", "numbers"):
            line = self._line(form)
            if not width or line.cell_len <= width:
                break
        return line

    def _line(self, form: str) -> Text:
        glyphs = glyphs_of(self.app)
        arrow = glyphs.arrow
        line = Text(no_wrap=True, overflow=glyphs.overflow)  # type: ignore[arg-type]
        shown = [(i, n) for i, n in enumerate(self.names) if i not in self.skipped]
        for number, (index, name) in enumerate(shown, 1):
            current = index == self.current
            if number > 1:
                line.append(f" {arrow} " if form == "padded" else f" {arrow}", style="dim")
            label = f"{number} {name}" if current or form != "numbers" else f"{number}"
            label = f" {label} " if current or form == "padded" else f" {label}"
            line.append(label, style="bold reverse" if current else "")
        return line
