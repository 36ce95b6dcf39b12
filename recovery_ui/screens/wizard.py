"""What the app's wizards share: the steps, one pane each, with the line that says where the
person is (``1 What > 2 Where to > ...``), going back a step, the question before the running
work is cancelled and the flag the engine's work takes for it, and the result pane."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import ContentSwitcher

from imaging.errors import Cancelled
from recovery_ui.i18n import _
from recovery_ui.messages import ProgressRelay
from recovery_ui.screens.base import BaseScreen
from recovery_ui.screens.question import Question
from recovery_ui.widgets.controls import Button, Label, Static
from recovery_ui.widgets.progress_panel import ProgressPanel
from recovery_ui.widgets.steps import Steps

if TYPE_CHECKING:
    from recovery_ui.state import OpenedRepository


@dataclass(frozen=True)
class CancelQuestion:
    """What the wizard asks before it cancels its running work (message ids, N_)."""

    title: str
    question: str
    yes: str
    no: str


class WizardScreen(BaseScreen[None]):
    """Steps shown one at a time, the last one the result pane (``#result``)."""

    STEPS: ClassVar[tuple[str, ...]] = ()
    """The names in the steps line (message ids, N_), one a pane."""
    PANES: ClassVar[tuple[str, ...]] = ()
    """The id of each step's pane, in order; the first is shown first, the last is "result"."""
    STEP_OF: ClassVar[dict[str, str]] = {}
    """Pane: the pane whose step it belongs to, for a pane that is not a step of its own."""
    BACK: ClassVar[dict[str, tuple[str, str]]] = {}
    """Pane: the pane ``escape`` goes back to and the widget focused there. From a pane not
    named here ``escape`` leaves the wizard."""
    RUNNING: ClassVar[str] = "progress"
    """The pane shown while the engine's work runs: ``escape`` asks to cancel it."""
    CANCEL: ClassVar[CancelQuestion | None] = None
    """The question before the running work is cancelled."""
    DEFAULT_CSS = """
    WizardScreen ContentSwitcher { height: 1fr; }
    WizardScreen #result-text { padding: 0 1; height: auto; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.opened: OpenedRepository | None = None
        self.cancel = threading.Event()  # the engine's calls take it and stop when it is set

    def compose_body(self) -> ComposeResult:
        yield Steps([_(s) for s in self.STEPS])
        with ContentSwitcher(initial=self.PANES[0]):
            yield from self.compose_steps()
            with Vertical(id="result"):
                yield Label("", id="result-title", classes="section first")
                yield Static("", id="result-text", markup=False)
                with Horizontal(classes="buttons"):
                    yield from self.compose_result_buttons()

    def compose_steps(self) -> ComposeResult:
        """The panes of the steps before the result, each a container with its pane's id."""
        yield from ()

    def compose_result_buttons(self) -> ComposeResult:
        yield Button(_("Done"), id="done", compact=True, variant="primary")

    def compose_running(self, heading: str, panel: ProgressPanel, cancel: str) -> ComposeResult:
        """The pane of the running work: its progress and the button that cancels it."""
        with Vertical(id=self.RUNNING):
            yield Label(heading, classes="section first")
            yield panel
            with Horizontal(classes="buttons"):
                yield Button(cancel, id="cancel", compact=True, variant="error")

    def on_mount(self) -> None:
        self.hourglass.cancel_events.add(self.cancel)

    @property
    def pane(self) -> str:
        """The id of the pane shown."""
        return self.query_one(ContentSwitcher).current or ""

    def step(self, pane: str) -> None:
        """Show the pane ``pane`` and mark its step in the steps line."""
        self.query_one(ContentSwitcher).current = pane
        self.query_one(Steps).current = self.PANES.index(self.STEP_OF.get(pane, pane))
        self.refresh_bindings()

    def skip_steps(self, *panes: str) -> None:
        """The steps of ``panes`` are not taken this way through (the others are numbered
        on without them); none named: every step is."""
        self.query_one(Steps).skipped = frozenset(self.PANES.index(p) for p in panes)

    def action_back(self) -> None:
        pane = self.pane
        if pane == self.RUNNING:
            self.ask_cancel()
        elif pane in self.BACK:
            previous, focus = self.BACK[pane]
            self.step(previous)
            self.query_one(focus).focus()
        else:
            self.dismiss(None)

    @on(Button.Pressed, "#done")
    def _done(self) -> None:
        self.dismiss(None)

    # --- the running work -------------------------------------------------------------------

    def start_running(self, phase: str, name: str) -> ProgressRelay:
        """Show the running step at ``phase``, the cancel flag cleared; the relay to give the
        engine's work for its progress."""
        self.cancel.clear()
        cancel = self.query_one("#cancel", Button)
        cancel.disabled = False
        self.step(self.RUNNING)
        self.query_one(ProgressPanel).set_phase(phase)
        cancel.focus()
        return ProgressRelay(self, name)

    def can_cancel(self) -> bool:
        """False once the running work has gone past the point where cancelling undoes it."""
        return True

    @on(Button.Pressed, "#cancel")
    def ask_cancel(self) -> None:
        """Ask before the running work is cancelled; if so, set the flag the engine takes."""
        question = self.CANCEL
        if question is None or not self.can_cancel():
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.cancel.set()
                self.query_one(ProgressPanel).set_phase(_("Stopping..."))

        self.app.push_screen(
            Question(_(question.title), _(question.question), _(question.yes), _(question.no)),
            answered,
        )

    def expected(self, error: BaseException) -> bool:
        return isinstance(error, Cancelled) and self.cancel.is_set()

    # --- the result -------------------------------------------------------------------------

    def _result(self, title: str, body: str, *, good: bool, focus: str = "#done") -> None:
        """Show the result pane: ``title`` marked good or not, ``body`` under it."""
        self.step("result")
        title_label = self.query_one("#result-title", Label)
        title_label.update(title)
        title_label.set_class(good, "good")
        title_label.set_class(not good, "error")
        self.query_one("#result-text", Static).update(body)
        self.query_one(focus, Button).focus()
