"""The Hourglass recovery app.

The app draws and asks; the engine (``imaging``) does the work, always in worker threads.
The app keeps what the screens share: the disks and the repositories found on them (kept
current by the disk watcher), the repository the person opened, the settings, the session
log. The vendor's settings (``/etc/hourglass/vendor.toml``) give the product's name, the
colours, and the language until the person chooses one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.color import Color
from textual.scrollbar import ScrollBar, ScrollBarRender
from textual.signal import Signal
from textual.theme import Theme
from textual.timer import Timer
from textual.widgets._toggle_button import ToggleButton
from textual.worker import Worker, WorkerState

from imaging.appliance import settings
from imaging.appliance.settings import Settings
from imaging.appliance.vendor import announce_ready, in_appliance, vendor_settings
from imaging.errors import HourglassError
from imaging.jobs import disks as discovery
from imaging.jobs import locations
from imaging.jobs.disks import DiskWatcher, Scope
from imaging.jobs.locations import unmount
from recovery_ui import i18n
from recovery_ui.console import Terminal, detect
from recovery_ui.i18n import N_, _
from recovery_ui.logs import SessionLog, install, uninstall
from recovery_ui.messages import DiskEvent
from recovery_ui.screens.base import describe_failure
from recovery_ui.screens.choose_repository import ChooseRepository
from recovery_ui.screens.error import ErrorDialog
from recovery_ui.screens.home import HomeScreen
from recovery_ui.screens.question import Question

if TYPE_CHECKING:
    from imaging.appliance.settings import Settings
    from imaging.appliance.vendor import VendorSettings
    from imaging.jobs.disks import Disk, DiskWatcher, FoundRepository
    from recovery_ui.state import OpenedRepository

log = logging.getLogger("recovery_ui")

# Disk events come in bursts (a disk and its partitions): list the disks once they settle.
DISK_SETTLE = 0.3
THEMES = {
    ("full", "dark"): "textual-dark",
    ("full", "light"): "textual-light",
    ("safe", "dark"): "ansi-dark",
    ("safe", "light"): "ansi-light",
}
VENDOR_THEME = "vendor"


def vendor_theme(vendor: VendorSettings) -> Theme:
    """The vendor's colours as a Textual theme; Textual derives the other shades from them."""

    return Theme(
        name=VENDOR_THEME,
        primary=vendor.primary,
        accent=vendor.accent,
        background=vendor.background,
        dark=Color.parse(vendor.background).brightness < 0.5,
    )


class PlainScrollBarRender(ScrollBarRender):
    """Scroll bars of whole cells: the eighth-block glyphs are not in console fonts."""

    VERTICAL_BARS: ClassVar[list[str]] = [" "] * 8
    HORIZONTAL_BARS: ClassVar[list[str]] = [" "] * 8


class HourglassApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "Hourglass"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", N_("Quit"), priority=True),
    ]

    def __init__(
        self,
        *,
        terminal: Terminal | None = None,
        language: str | None = None,
        scope: Scope | None = None,
        probe: bool | None = None,
        watch_disks: bool = True,
        load_settings: bool = True,
        netns: str | None = None,
        vendor: VendorSettings | None = None,
    ) -> None:

        self.vendor = vendor if vendor is not None else vendor_settings()
        self.terminal = terminal or detect()
        self.scope = scope if scope is not None else Scope.from_environment()
        self.probe = probe if probe is not None else in_appliance()
        self.watch_disks = watch_disks
        self.load_settings = load_settings
        self.netns = netns  # the Network screen's namespace (tests); None: this machine's
        self.wanted_language = language or self._vendor_language() or i18n.from_environment()
        i18n.set_language(i18n.choose(self.wanted_language, self.terminal.cjk))
        self.theme_choice = "dark"
        self.theme_names = dict(THEMES)
        super().__init__()
        self.title = self.vendor.name
        self._register_vendor_theme()
        self.session_log: SessionLog = install()
        self.disks: list[Disk] = []
        self.found: list[FoundRepository] = []
        self.opened: OpenedRepository | None = None
        self.probed: set[tuple[str, str]] = set()
        self.disks_changed: Signal[HourglassApp] = Signal(self, "disks_changed")
        self.repository_changed: Signal[HourglassApp] = Signal(self, "repository_changed")
        self.settings_drive = ""
        self.cancel_events: set[threading.Event] = set()  # set when the person quits
        self._watcher: DiskWatcher | None = None
        self._settle: Timer | None = None
        self._announced = False
        self._generation = 0
        self._apply_theme()

    # --- look -------------------------------------------------------------------------------

    def get_css_variables(self) -> dict[str, str]:
        return {**super().get_css_variables(), "hg-border": self.terminal.glyphs.border}

    def _vendor_language(self) -> str | None:
        """The vendor's language, when a vendor file was read (without one, the system's)."""
        return i18n.from_locale(self.vendor.language) if self.vendor.path is not None else None

    def _register_vendor_theme(self) -> None:
        """The vendor's colours replace the standard dark theme, the one the app starts with
        (Settings still offers the light one). The console's 16 colours cannot show them:
        there the ANSI themes stay. Default colours keep Textual's own dark theme."""
        if self.vendor.custom_colours:
            self.register_theme(vendor_theme(self.vendor))
            self.theme_names[("full", "dark")] = VENDOR_THEME

    def _apply_theme(self) -> None:
        mode = "safe" if self.terminal.safe else "full"
        choice = self.theme_choice if self.theme_choice == "light" else "dark"
        self.theme = self.theme_names[(mode, choice)]
        ScrollBar.renderer = PlainScrollBarRender if self.terminal.safe else ScrollBarRender
        # Checkboxes and selection lists draw their box with these (class-wide, like the
        # scroll bars: one app per process).
        glyphs = self.terminal.glyphs
        ToggleButton.BUTTON_LEFT = glyphs.check_left
        ToggleButton.BUTTON_INNER = glyphs.check_inner
        ToggleButton.BUTTON_RIGHT = glyphs.check_right
        if self.terminal.safe:
            self.add_class("-safe")
        self.set_class(self.terminal.kind == "serial", "-serial")

    def set_theme_choice(self, choice: str) -> None:
        self.theme_choice = "light" if choice == "light" else "dark"
        self._apply_theme()

    # --- start and stop ---------------------------------------------------------------------

    def on_mount(self) -> None:

        log.info(
            "Hourglass app started: terminal %s (%s), language %s, vendor settings %s",
            self.terminal.kind,
            self.terminal.reason,
            i18n.current(),
            self.vendor.path or "(defaults)",
        )
        self.push_screen(HomeScreen())
        if self.watch_disks:
            self._start_watcher()
        self.refresh_disks()
        self.call_after_refresh(self._announce)

    def _announce(self) -> None:

        if not self._announced:
            self._announced = True
            announce_ready()

    def _start_watcher(self) -> None:

        def event(action: str, device: str) -> None:
            self.post_message(DiskEvent(action, device))

        try:
            self._watcher = DiskWatcher(event)
            self._watcher.start()
        except Exception as e:  # no netlink in this sandbox: the list is refreshed by hand
            log.warning("disk watcher not started: %s", e)
            self._watcher = None

    def on_unmount(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        # The log file may be on a drive the app mounted: close it before unmounting.
        uninstall(self.session_log)
        self._release_mounts()

    def _release_mounts(self) -> None:

        if self.opened is not None and self.opened.location is not None:
            try:
                unmount(self.opened.location)
            except HourglassError as e:
                log.warning("could not unmount %s: %s", self.opened.location.mountpoint, e)
        for found in self.found:  # what the probe mounted read-only to look
            if found.mounted_by_us:
                with contextlib.suppress(HourglassError, OSError):
                    found.release()

    async def action_quit(self) -> None:
        """Quit (the appliance starts the app again); while engine work runs, ask first and
        cancel it."""

        if not self.busy():
            self.exit(0)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                for event in self.cancel_events:
                    event.set()
                self.exit(0)

        self.push_screen(
            Question(
                _("Quit Hourglass?"),
                _(
                    "Work is still running. It is stopped; a backup that is stopped records "
                    "nothing, a restore that is stopped leaves the disk partly written."
                ),
                _("Quit"),
                _("Go on"),
            ),
            answered,
        )

    # --- disks ------------------------------------------------------------------------------

    def on_disk_event(self, event: DiskEvent) -> None:
        log.info("disk %s: %s", event.action, event.device)
        if self._settle is not None:
            self._settle.stop()
        self._settle = self.set_timer(DISK_SETTLE, self.refresh_disks)

    def refresh_disks(self) -> None:
        """List the disks again (in a worker), then look for repositories on them."""
        self._generation += 1
        self._list_disks(self._generation)

    @work(thread=True, exclusive=True, exit_on_error=False, group="disks", name="disks")
    def _list_disks(self, generation: int) -> None:

        disks = discovery.list_disks(self.scope)
        self.call_from_thread(self._disks_listed, generation, disks, None)
        new = [d for d in disks if (d.device, d.table_id) not in self.probed] if self.probe else []
        found = discovery.find_repositories(disks, probe_disks=new)
        self.probed |= {(d.device, d.table_id) for d in new}
        if new:
            disks = discovery.list_disks(self.scope)  # the probe's mounts mark repository disks
        self.call_from_thread(self._disks_listed, generation, disks, found)

    def _disks_listed(
        self, generation: int, disks: list[Disk], found: list[FoundRepository] | None
    ) -> None:
        if generation != self._generation:
            return  # a newer listing is under way (a disk came or went meanwhile)
        self.disks = disks
        if found is not None:
            self.found = found
            if self.load_settings and not self.settings_drive:
                self._load_settings_from_drives()
        self.disks_changed.publish(self)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            self.report_error(event.worker.error, event.worker.name)

    # --- settings and language --------------------------------------------------------------

    def _load_settings_from_drives(self) -> None:

        for repository in self.found:
            drive = settings.drive_root(repository.path)
            loaded = settings.load(drive)
            if loaded is not None:
                self.settings_drive = str(drive)
                log.info("settings loaded from %s", drive)
                self.apply_settings(loaded)
                return

    def current_settings(self) -> Settings:

        return Settings(language=self.wanted_language, theme=self.theme_choice)

    def apply_settings(self, chosen: Settings) -> None:
        if chosen.theme and chosen.theme != self.theme_choice:
            self.set_theme_choice(chosen.theme)
        if chosen.language and chosen.language != self.wanted_language:
            self.set_language(chosen.language)

    def set_language(self, wanted: str) -> None:
        """Show the app in ``wanted`` (English where the terminal cannot draw it)."""
        self.wanted_language = wanted
        shown = i18n.choose(wanted, self.terminal.cjk)
        if shown == i18n.current():
            return
        i18n.set_language(shown)
        log.info("language: %s", shown)
        self.call_later(self.rebuild)

    async def rebuild(self) -> None:
        """Recreate the screens so every label is drawn again in the current language. The
        screen on top comes back if it can be made afresh (Settings, Logs, Network)."""

        top = type(self.screen)
        while len(self.screen_stack) > 2:
            await self.pop_screen()
        await self.switch_screen(HomeScreen())
        if top is not HomeScreen and getattr(top, "REBUILDABLE", False):
            await self.push_screen(top())

    # --- the repository in use --------------------------------------------------------------

    def set_opened(self, opened: OpenedRepository | None) -> None:
        previous = self.opened
        if (
            previous is not None
            and opened is not None
            and previous.location is not None
            and previous.location != opened.location
        ):
            self._release_location(previous)
        self.opened = opened
        if opened is not None:
            log.info("repository opened: %s (%s)", opened.path, opened.label)
            if opened.writable and opened.drive is not None:
                self.attach_log(str(opened.drive))
        self.repository_changed.publish(self)

    def _release_location(self, opened: OpenedRepository) -> None:

        if opened.location is None:
            return
        try:
            unmount(opened.location)
        except HourglassError as e:
            log.warning("could not unmount %s: %s", opened.location.mountpoint, e.message)

    def repository_status(self) -> str:
        if self.opened is None:
            return _("No repository open")
        return _("Repository: {label}").format(label=self.opened.label)

    def attach_log(self, drive: str) -> None:
        """Write the session log to ``drive`` too (from now on, and everything so far)."""

        try:
            path = settings.log_file(drive, self.session_log.started)
            self.session_log.write_to(path)
            log.info("session log written to %s", path)
        except (HourglassError, OSError) as e:
            log.warning("cannot write the log to %s: %s", drive, e)

    def writable_drive(self) -> str:
        """(In a worker thread.) The root of a backup drive that can be written, for
        settings and logs: the open repository's, or that of a repository found on a drive
        (a drive the probe mounted read-only is mounted again read-write); "" if none. The
        session log is written there from now on."""
        drive = self._find_writable_drive()
        if drive:
            self.attach_log(drive)
        return drive

    def _find_writable_drive(self) -> str:

        if self.opened is not None and self.opened.writable and self.opened.drive is not None:
            return str(self.opened.drive)
        by_device = {d.device: d for d in self.disks}
        for found in self.found:
            root = settings.drive_root(found.path)
            if not found.mounted_by_us:
                if os.access(root, os.W_OK) and not os.statvfs(root).f_flag & os.ST_RDONLY:
                    return str(root)
                continue
            if self.opened is not None and str(self.opened.drive) == str(root):
                continue  # the open repository reads from this mount: leave it
            disk = by_device.get(found.disk)
            partition = (
                next((p for p in disk.partitions if p.number == found.partition), None)
                if disk
                else None
            )
            if partition is None:
                continue
            location = locations.mount_partition(partition.device, partition.fstype, writable=True)
            self.call_from_thread(self.refresh_disks)
            return location.mountpoint
        return ""

    # --- errors -----------------------------------------------------------------------------

    # --- navigation (screens reach other screens through the app: no screen imports the
    # app or a screen that imports it back) ------------------------------------------------

    def push_repository_chooser(
        self,
        title: str,
        then: Callable[[OpenedRepository | None], None],
        *,
        writable: bool = False,
        allow_create: bool = False,
        source: str = "",
    ) -> None:
        """Show the repository chooser; ``then`` gets the opened repository or None.
        ``source``: the disk about to be backed up (not offered as the repository's place)."""

        self.push_screen(
            ChooseRepository(title, writable=writable, allow_create=allow_create, source=source),
            then,
        )

    def home_action(self, action: str) -> None:
        """Run one of the home screen's actions (``reboot``, ``poweroff``) from any screen."""

        home = next(s for s in self.screen_stack if isinstance(s, HomeScreen))
        home.action_do(action)

    def report_error(self, error: BaseException, context: str = "") -> None:
        """Show ``error`` in a dialog (message and hint); the full detail goes to the log."""

        log.error(
            "%s failed: %s",
            context or "work",
            error,
            exc_info=(type(error), error, error.__traceback__),
        )
        message, hint = describe_failure(error)
        self.push_screen(ErrorDialog(message, hint))

    def busy(self) -> bool:
        """True while engine work that must not be interrupted runs."""
        return any(
            worker.group == "engine" and worker.state is WorkerState.RUNNING
            for worker in self.workers
        )


def run(**kwargs: Any) -> int:
    app = HourglassApp(**kwargs)
    code = app.run()
    return code or 0
