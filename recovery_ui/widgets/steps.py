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

    def __init__(self, names: list[str], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.names = names

    def render(self) -> Text:
        glyphs = glyphs_of(self.app)
        arrow = glyphs.arrow
        line = Text(no_wrap=True, overflow=glyphs.overflow)  # type: ignore[arg-type]
        for index, name in enumerate(self.names):
            if index:
                line.append(f" {arrow} ", style="dim")
            style = "bold reverse" if index == self.current else ""
            line.append(f" {index + 1} {name} ", style=style)
        return line
