"""A progress bar drawn with glyphs every console has (see recovery_ui.console)."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from recovery_ui.console import glyphs_of


class Meter(Widget):
    DEFAULT_CSS = """
    Meter { height: 1; width: 1fr; color: $success; }
    """

    fraction: reactive[float] = reactive(0.0)
    """How much is done, 0 to 1."""

    def render(self) -> Text:
        glyphs = glyphs_of(self.app)
        percent = f" {self.fraction * 100:5.1f}%"
        width = max(1, self.size.width - len(percent))
        filled = min(width, int(width * self.fraction + 1e-9))
        bar = Text(no_wrap=True)
        bar.append(glyphs.used * filled)
        bar.append(glyphs.free * (width - filled), style="dim")
        bar.append(percent, style="bold")
        return bar
