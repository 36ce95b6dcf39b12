"""The Hourglass recovery app (placeholder home screen; the full app grows here)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.widgets import Footer, Header, Static

from imaging import __version__
from imaging.appliance import announce_ready


class HourglassApp(App[int]):
    TITLE = "Hourglass"
    SUB_TITLE = __version__
    BINDINGS: ClassVar[list[BindingType]] = [("ctrl+q", "quit", "Quit")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Hourglass recovery")
        yield Footer()

    def on_mount(self) -> None:
        announce_ready()


def run() -> int:
    return HourglassApp().run() or 0
