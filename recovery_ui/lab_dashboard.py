"""The lab dashboard: `hourglass lab serve` on a terminal (registered with the engine through
the ``hourglass.dashboards`` entry point group, so the engine never names the app).

One line per PC: by MAC as soon as it network-boots (its name from the CSV), then its phase,
progress, rate and time, and OK or FAILED with the reason. The session starts by its rule
or on a key; the summary can be saved to a file. It fits 80x24 and draws with the console's
glyphs and colours on the Linux console or a serial line."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from imaging.errors import HourglassError
from imaging.units import human_size
from recovery_ui import i18n
from recovery_ui.app import THEMES
from recovery_ui.console import Terminal, detect
from recovery_ui.i18n import N_, _
from recovery_ui.widgets.keys_bar import KeysBar
from recovery_ui.widgets.title_bar import TitleBar

if TYPE_CHECKING:
    from imaging.jobs.lab import LabRun, Row

# OK and FAILED stay as they are in every language: they are the words of the result lines
# (HOURGLASS-RESULT) that labs look for.
PHASES = {
    "booting": N_("booting"),
    "joined": N_("joined"),
    "receiving": N_("receiving"),
    "verifying": N_("verifying"),
}
SUMMARY_DIR = "HOURGLASS_LAB_SUMMARY_DIR"
"""Where the summary is saved (default: the current directory)."""


class LabDashboard(App[int]):
    CSS_PATH = "app.tcss"
    CSS = """
    #session { padding: 0 1; height: auto; }
    #pcs { height: 1fr; }
    #state { padding: 0 1; height: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "start", N_("Start now")),
        Binding("w", "save", N_("Save summary")),
        Binding("q", "quit_session", N_("Quit")),
    ]

    def __init__(self, session: LabRun, opening: str, *, terminal: Terminal | None = None) -> None:
        self.terminal = terminal or detect()
        i18n.set_language(i18n.choose(i18n.from_environment(), self.terminal.cjk))
        super().__init__()
        self.title = "Hourglass"
        self.session = session
        self.opening = opening
        self.done = False
        self.quit_asked = False
        self.saved: Path | None = None
        self.theme = THEMES[("safe" if self.terminal.safe else "full", "dark")]

    def get_css_variables(self) -> dict[str, str]:
        return {**super().get_css_variables(), "hg-border": self.terminal.glyphs.border}

    def compose(self) -> ComposeResult:
        yield TitleBar(_("Lab session"))
        yield Static(self.opening, id="session", markup=False)
        yield DataTable(id="pcs", cursor_type="row", zebra_stripes=False)
        yield Static("", id="failures", classes="error", markup=False)
        yield Static("", id="state", markup=False)
        yield KeysBar()

    def on_mount(self) -> None:
        if self.terminal.safe:
            self.add_class("-safe")
        table = self.query_one("#pcs", DataTable)
        for label in (_("PC"), _("Phase"), _("Progress"), _("Rate"), _("Time"), _("Result")):
            table.add_column(label, key=label)
        self.set_interval(0.5, self.tick)
        self.tick()

    # --- the session ------------------------------------------------------------------------

    def tick(self) -> None:
        try:
            done = self.session.poll()
        except HourglassError as e:
            self.notify(e.message, severity="error", timeout=30)
            done = False
        if done and not self.done:
            self.done = True
            self.notify(_("Every PC is done. Save the summary with w, quit with q."))
        self._draw(self.session.rows())

    def _draw(self, rows: list[Row]) -> None:
        table = self.query_one("#pcs", DataTable)
        glyphs = self.terminal.glyphs
        table.clear()
        failures: list[str] = []  # in full: the table's last column is cut at 80 columns
        for r in rows:
            who = r.name or r.mac or "?"
            bar = int(r.fraction * 5)
            done = f"{glyphs.used * bar}{glyphs.free * (5 - bar)}{r.fraction * 100:4.0f}%"
            phase = Text(_(PHASES[r.phase]) if r.phase in PHASES else r.phase)
            if r.phase == "OK":
                phase.stylize("bold green")
            elif r.phase == "FAILED":
                phase.stylize("bold red")
            rate = f"{human_size(r.rate)}/s" if r.phase in ("receiving", "verifying") else ""
            seconds = f"{r.seconds:.0f} s" if r.seconds else ""
            table.add_row(who, phase, done, rate, seconds, r.message)
            if r.phase == "FAILED":
                failures.append(f"{who}: {r.message}")
        server = self.session.server
        ok = sum(r.phase == "OK" for r in rows)
        failed = sum(r.phase == "FAILED" for r in rows)
        if not server.started:
            state = _("Waiting: {pcs} PCs joined. {rule} Press s to start now.").format(
                pcs=len(rows), rule=self.session.rule()
            )
        else:
            state = _(
                "Sending: {sent} multicast at {rate}/s, pass {passes}. {ok} OK, {failed} FAILED "
                "of {pcs}."
            ).format(
                sent=human_size(server.sent_bytes),
                rate=human_size(server.rate),
                passes=server.passes + 1,
                ok=ok,
                failed=failed,
                pcs=len(rows),
            )
        if self.saved is not None:
            state += " " + _("Summary saved to {path}.").format(path=self.saved)
        self.query_one("#state", Static).update(state)
        self.query_one("#failures", Static).update("\n".join(failures[-3:]))

    # --- keys -------------------------------------------------------------------------------

    def action_start(self) -> None:
        if self.session.server.started:
            self.notify(_("The session has started already."))
            return
        self.session.start_now()
        self.tick()

    def action_save(self) -> None:
        folder = Path(os.environ.get(SUMMARY_DIR) or ".")
        path = folder / f"hourglass-lab-{datetime.now():%Y%m%d-%H%M%S}.txt"
        try:
            path.write_text(self.session.summary())
        except OSError as e:
            self.notify(
                _("Cannot save the summary to {path}: {error}.").format(
                    path=path, error=e.strerror
                ),
                severity="error",
            )
            return
        self.saved = path
        self.notify(_("Summary saved to {path}.").format(path=path))
        self._draw(self.session.rows())

    def action_quit_session(self) -> None:
        if self.done or self.quit_asked:
            self.exit(0)
            return
        self.quit_asked = True
        self.notify(
            _("PCs are still being restored. Press q again to stop the session."),
            severity="warning",
        )


def run(session: LabRun, opening: str) -> None:
    """The dashboard until the person quits (the engine prints the result line after)."""
    LabDashboard(session, opening).run()
