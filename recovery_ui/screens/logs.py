"""Logs: what this session did, line by line, also written to the backup drive."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Log

from imaging.errors import NotFound
from recovery_ui.i18n import N_, _
from recovery_ui.messages import LogLine
from recovery_ui.screens.base import BaseScreen
from recovery_ui.widgets.controls import Button, Static


class LogsScreen(BaseScreen[None]):
    TITLE_TEXT = N_("Logs")
    REBUILDABLE: ClassVar[bool] = True
    DEFAULT_CSS = """
    LogsScreen #log { height: 1fr; margin: 0 1; }
    LogsScreen #where { padding: 0 1; height: auto; }
    """

    def compose_body(self) -> ComposeResult:
        yield Static("", id="where", markup=False)
        yield Log(id="log", highlight=False)
        with Horizontal(classes="buttons"):
            yield Button(_("Write the log to the backup drive"), id="write", compact=True)

    def on_mount(self) -> None:
        log = self.query_one("#log", Log)
        log.write_lines(list(self.hourglass.session_log.lines))
        self.hourglass.session_log.listen(self._line)
        self._show_where()
        log.focus()

    def on_unmount(self) -> None:
        self.hourglass.session_log.forget(self._line)

    def _line(self, line: str) -> None:
        """Called in whatever thread logged the line."""
        self.post_message(LogLine(line))

    def on_log_line(self, message: LogLine) -> None:
        self.query_one("#log", Log).write_line(message.text)

    def _show_where(self) -> None:
        path = self.hourglass.session_log.path
        self.query_one("#where", Static).update(
            _("This log is also written to {path}.").format(path=path)
            if path
            else _(
                "The log is not on a drive yet: it is written to the backup drive once "
                "one is in use."
            )
        )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "write":
            self.write_to_drive()

    @work(thread=True, exclusive=True, exit_on_error=False, group="log")
    def write_to_drive(self) -> None:

        drive = self.hourglass.writable_drive()
        if not drive:
            raise NotFound(
                _("There is no backup drive to write the log to."),
                _("Plug in the backup drive, or open a repository first."),
            )
        self.hourglass.attach_log(drive)
        self.app.call_from_thread(self._show_where)
