"""What every screen of the app shares: the title bar, the keys bar, the way errors of the
engine's work come back (a dialog with the message and hint, the detail in the log), its
progress, and asking for the repository to work on."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, TypeVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from imaging.errors import (
    MISTYPED_HINT,
    HourglassError,
    LocationLost,
    NoScratchSpace,
    NoSpace,
    PassphraseError,
    RepositoryOnSource,
    TargetTooSmall,
)
from imaging.jobs.locations import S3Error
from recovery_ui.i18n import N_, _
from recovery_ui.messages import ProgressRelay
from recovery_ui.widgets.keys_bar import KeysBar
from recovery_ui.widgets.progress_panel import ProgressPanel
from recovery_ui.widgets.title_bar import TitleBar

if TYPE_CHECKING:
    from imaging.progress import Progress
    from recovery_ui.app import HourglassApp
    from recovery_ui.state import OpenedRepository

log = logging.getLogger("recovery_ui")

ResultT = TypeVar("ResultT")


def describe_failure(error: BaseException) -> tuple[str, str]:
    """(message, hint) to show for ``error``: the engine's own words for its errors (an
    object store's with a line and a hint in the app's language: the engine's hint names
    command-line options; a disk too small with the one thing the app can do about it: its
    engine hint names partitions to restore singly, which only the command line can)."""

    if isinstance(error, S3Error):
        return (
            _("The object store could not be used.") + "\n" + error.message,
            _(
                "Check the endpoint, the bucket, the access key and the secret key; for a "
                "store with a certificate of its own, give its CA certificate file."
            ),
        )
    if isinstance(error, LocationLost):
        return _("The backup drive was disconnected. Plug it in and choose it again."), ""
    if isinstance(error, PassphraseError) and error.message.startswith("Wrong passphrase"):
        # The engine's advice in the app's language; what else it found, in its words.
        extra = (error.hint or "").removeprefix(MISTYPED_HINT).strip()
        advice = _(
            "Check Caps Lock and the keyboard layout (this console may use a US layout, "
            "where letters such as Y and Z and most symbols sit elsewhere), then type it "
            "again. A recovery key opens the repository too: type it in the same field."
        )
        return (
            _("That passphrase does not open this repository."),
            f"{advice}\n{extra}" if extra else advice,
        )
    if isinstance(error, NoSpace) and error.message.startswith("The backup drive is full"):
        # The engine's hint names commands; say where the same is done in the app.
        return (
            error.message,
            _(
                "Free space on the backup drive: on the Repository screen, Free space frees "
                "what failed backups left, and Forget old forgets old backups. Or use a "
                "larger drive."
            ),
        )
    if isinstance(error, TargetTooSmall):
        return error.message, _("Choose a larger disk.")
    if isinstance(error, NoScratchSpace):
        # The engine's hint names --scratch; the app makes the copy beside the repository.
        return (
            error.message,
            _(
                "The copy is made beside the repository: free space on the backup drive "
                "(Free space and Forget old on the Repository screen), or choose a larger disk."
            ),
        )
    if isinstance(error, HourglassError):
        return error.message, error.hint or ""
    return (
        _("Something unexpected went wrong: {error}").format(
            error=f"{type(error).__name__}: {error}"
        ),
        _("The details are in the log (Logs on the main screen)."),
    )


def failure_reason(error: BaseException) -> str:
    """The engine's message for ``error`` (without its hint), to show on the screen; in the
    app's language where the app knows the error's kind."""

    if isinstance(error, RepositoryOnSource):
        return _("The repository is on the disk you want to back up.")
    if isinstance(error, LocationLost):
        return _("The backup drive was disconnected. Plug it in and choose it again.")
    return getattr(error, "message", str(error))


class AppScreenMixin:
    """Typed access to the app from screens and dialogs."""

    @property
    def hourglass(self) -> HourglassApp:
        return cast("HourglassApp", cast(Screen[object], self).app)


class BaseScreen(AppScreenMixin, Screen[ResultT]):
    """A full screen: title bar on top, keys at the bottom, ``escape`` goes back."""

    TITLE_TEXT: ClassVar[str] = ""  # a message id (N_), translated when shown
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", N_("Back"))]

    def screen_title(self) -> str:
        return _(self.TITLE_TEXT)

    def compose(self) -> ComposeResult:
        yield TitleBar(self.screen_title(), self.hourglass.repository_status())
        yield from self.compose_body()
        yield KeysBar()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def action_back(self) -> None:
        self.dismiss()

    def set_status(self, status: str) -> None:
        self.query_one(TitleBar).status = status

    def choose_repository(
        self,
        title: str,
        then: Callable[[OpenedRepository], None],
        *,
        writable: bool = False,
        allow_create: bool = False,
        source: str = "",
    ) -> None:
        """Ask for the repository (the chooser opens it), then ``then`` with it; if the person
        chose none, go back (``action_back``). ``source``: the disk about to be backed up,
        whose repositories and partitions are not offered."""

        def chosen(opened: OpenedRepository | None) -> None:
            if opened is None:
                self.action_back()
                return
            self.set_status(self.hourglass.repository_status())
            then(opened)

        self.hourglass.push_repository_chooser(
            title, chosen, writable=writable, allow_create=allow_create, source=source
        )

    def on_progress_relay_updated(self, message: ProgressRelay.Updated) -> None:
        event = message.relay.take()
        if event is not None:
            self.show_progress(event)

    def show_progress(self, event: Progress) -> None:
        """Show the newest progress of the screen's engine work (in its progress panel)."""
        self.query_one(ProgressPanel).show(event)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            event.stop()
            error = event.worker.error
            if not self.expected(error):
                self.hourglass.report_error(error, event.worker.name)
            self.work_failed(event.worker, error)

    def expected(self, error: BaseException) -> bool:
        """True for an error the screen shows itself (a cancel the person asked for)."""
        return False

    def work_failed(self, worker: Worker[object], error: BaseException) -> None:
        """Called after the error dialog was shown: put the screen in a sensible state."""


class BaseDialog(AppScreenMixin, ModalScreen[ResultT]):
    """A dialog over the current screen."""

    DEFAULT_CSS = """
    BaseDialog { align: center middle; }
    BaseDialog > .dialog { width: 76; max-width: 95%; height: auto; max-height: 90%;
                           border: $hg-border $primary; background: $surface; padding: 0 1; }
    BaseDialog .dialog-title { text-style: bold; width: 1fr; margin-bottom: 1; }
    BaseDialog .buttons { height: auto; margin-top: 1; align-horizontal: right; }
    BaseDialog .buttons Button { margin-left: 2; }
    """
