"""The top line: the product, the screen, and the repository in use."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive

from imaging import __version__
from recovery_ui.widgets.controls import Label


class TitleBar(Horizontal):
    """``Hourglass 0.1  Back up ................ Repository: /mnt/repo``; the product's name
    is the app's title (the vendor's)."""

    DEFAULT_CSS = """
    TitleBar { dock: top; height: 1; background: $primary; color: $text; }
    TitleBar > #title { width: 1fr; text-style: bold; padding: 0 1; }
    TitleBar > #status { width: auto; max-width: 60%; padding: 0 1; text-wrap: nowrap;
                         text-overflow: ellipsis; }
    """

    title: reactive[str] = reactive("")
    """What this screen is for."""
    status: reactive[str] = reactive("")
    """The repository in use, or what the app is doing."""

    def __init__(self, title: str, status: str = "") -> None:
        super().__init__()
        self.set_reactive(TitleBar.title, title)
        self.set_reactive(TitleBar.status, status)

    def compose(self) -> ComposeResult:
        yield Label(self._title_text(), id="title")
        yield Label(self.status, id="status")

    def _title_text(self) -> str:
        return f"{self.app.title} {__version__}  {self.title}".rstrip()

    def watch_title(self) -> None:
        if self.is_mounted:
            self.query_one("#title", Label).update(self._title_text())

    def watch_status(self, status: str) -> None:
        if self.is_mounted:
            self.query_one("#status", Label).update(status)
