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
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from textual import events, work
from textual.actions import SkipAction
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
from imaging.errors import HourglassError, LocationLost, UsageError
from imaging.jobs import disks as discovery
from imaging.jobs import locations
from imaging.jobs.disks import DiskWatcher, Scope
from imaging.jobs.locations import unmount
from recovery_ui import i18n
from recovery_ui.console import Terminal, detect
from recovery_ui.i18n import N_, _
from recovery_ui.logs import SessionLog, install, uninstall
from recovery_ui.messages import DiskEvent
from recovery_ui.screens.base import BaseScreen, describe_failure
from recovery_ui.screens.choose_repository import ChooseRepository, mounted_writable
from recovery_ui.screens.error import ErrorDialog
from recovery_ui.screens.home import HomeScreen
from recovery_ui.screens.question import Question
from recovery_ui.state import OpenedRepository
from recovery_ui.widgets.controls import Field

if TYPE_CHECKING:
    from imaging.appliance.settings import Settings
    from imaging.appliance.vendor import VendorSettings
    from imaging.jobs.disks import Disk, DiskWatcher, FoundRepository, Partition

log = logging.getLogger("recovery_ui")

# Disk events come in bursts (a disk and its partitions): read the disks once they settle,
# and after DISK_SETTLE_MAX at the latest when events never stop.
DISK_SETTLE = 0.3
DISK_SETTLE_MAX = 1.0
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
        # Draw the whole screen again: a line another program wrote over it (a kernel
        # message, the READY line on a serial port) stays until then.
        Binding("ctrl+l", "redraw", N_("Redraw"), show=False, priority=True),
        # Tab moves the focus before the keys after it are handed out. As Textual's screen
        # binding it acted only once the focused field had passed the key up, and the app had
        # meanwhile given that field what came after Tab: typed quickly, or read in one go by
        # a busy app (a slow serial console), the second passphrase went into the first field.
        Binding("tab", "focus_next", show=False, priority=True),
        Binding("shift+tab", "focus_previous", show=False, priority=True),
        # The same for Enter in a field that moves on (controls.Field); elsewhere Enter is
        # the focused widget's.
        Binding("enter", "field_enter", show=False, priority=True),
    ]

    async def action_field_enter(self) -> None:
        field = self.focused
        if not isinstance(field, Field):
            raise SkipAction()
        self.screen.focus_next()
        await field.action_submit()

    def action_redraw(self) -> None:
        self.screen.refresh(repaint=True, layout=True)

    def on_resize(self, event: events.Resize) -> None:
        # Also a SIGWINCH at the same size: on the serial port, the app on the screen sends
        # one after writing its READY or progress line to the port (vendor.serial_line), so
        # that line does not stay over this app's screen.
        self.call_after_refresh(self.action_redraw)

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
        self.disks_listed = False  # a whole listing has finished (none found is then said)
        self.found: list[FoundRepository] = []
        self.opened: OpenedRepository | None = None
        self.probed: set[tuple[str, str]] = set()
        self.disks_changed: Signal[HourglassApp] = Signal(self, "disks_changed")
        self.repository_changed: Signal[HourglassApp] = Signal(self, "repository_changed")
        self.settings_drive = ""
        self.cancel_events: set[threading.Event] = set()  # set when the person quits
        self._watcher: DiskWatcher | None = None
        self._settle: Timer | None = None
        self._settle_since: float | None = None
        self._pending_lock = threading.Lock()
        self._pending: set[str] = set()  # disks that events named, to read again
        self._pending_all = False  # every disk, to list again
        self._listing = False  # a listing worker runs
        self._announced = False
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
        disk = discovery.disk_of_event(event.device, self.disks, self.scope)
        if disk is None:
            log.debug("disk %s: %s (not shown)", event.action, event.device)
            return
        log.info("disk %s: %s", event.action, event.device)
        with self._pending_lock:
            self._pending.add(disk)
        # Debounced: a disk and its partitions come in a burst. Events that never stop (a
        # loop device coming and going every second) wait at most DISK_SETTLE_MAX.
        now = time.monotonic()
        if self._settle_since is None:
            self._settle_since = now
        if self._settle is not None:
            self._settle.stop()
        delay = min(DISK_SETTLE, max(0.0, self._settle_since + DISK_SETTLE_MAX - now))
        self._settle = self.set_timer(delay, self._settled)

    def _settled(self) -> None:
        self._settle, self._settle_since = None, None
        self._start_disk_worker()

    def refresh_disks(self) -> None:
        """List every disk again (in a worker), then look for repositories on new ones.
        Partitions that did not change are not probed again (``imaging.disks.facts``)."""
        with self._pending_lock:
            self._pending_all = True
        self._start_disk_worker()

    def _start_disk_worker(self) -> None:
        with self._pending_lock:
            if self._listing:
                return  # the running worker takes what is pending when it is done
            self._listing = True
        self._list_disks()

    @work(thread=True, exit_on_error=False, group="disks", name="disks")
    def _list_disks(self) -> None:
        """Work through the pending changes until none is left: the whole list, or only the
        disks events named."""
        try:
            while True:
                with self._pending_lock:
                    everything, devices = self._pending_all, self._pending
                    self._pending_all, self._pending = False, set()
                    if not everything and not devices:
                        self._listing = False
                        return
                if everything:
                    disks = []
                    for disk in discovery.iter_disks(self.scope):
                        disks.append(disk)
                        self.call_from_thread(self._disk_read, disk.device, disk)
                    self.call_from_thread(self._disks_listed, disks)
                else:
                    disks = []
                    for device in sorted(devices):
                        again = discovery.read_disk(device, self.scope)
                        self.call_from_thread(self._disk_read, device, again)
                        if again is not None:
                            disks.append(again)
                self._look_for_repositories(disks)
        except BaseException:
            with self._pending_lock:
                self._listing = False
            raise

    def _look_for_repositories(self, changed: list[Disk]) -> None:
        """(In the worker.) Repositories on the drives: on mounted filesystems of every disk
        shown, and on the unmounted partitions of disks not probed yet."""
        new = (
            [d for d in changed if (d.device, d.table_id) not in self.probed] if self.probe else []
        )
        found = discovery.find_repositories(list(self.disks), probe_disks=new)
        self.probed |= {(d.device, d.table_id) for d in new}
        for disk in new:  # the probe's mounts mark repository disks
            self.call_from_thread(self._disk_read, disk.device, discovery.read_disk(disk.device))
        self.call_from_thread(self._repositories_found, found)

    def _disk_read(self, device: str, disk: Disk | None) -> None:
        """One disk read again (None: gone): only its entry in the list changes."""
        disks = list(self.disks)
        index = next((i for i, d in enumerate(disks) if d.device == device), None)
        if disk is None:
            self.probed = {p for p in self.probed if p[0] != device}  # looked at again if back
            if index is None:
                return
            del disks[index]
        elif index is None:
            disks.append(disk)
            disks.sort(key=lambda d: d.device)  # the order a whole listing gives
        elif disks[index] == disk:
            return
        else:
            disks[index] = disk
        self.disks = disks
        self.disks_changed.publish(self)

    def _disks_listed(self, disks: list[Disk]) -> None:
        """A whole listing done: disks that are no longer there go from the list."""
        first = not self.disks_listed
        self.disks_listed = True
        if self.disks != disks or first:
            self.disks = disks
            self.disks_changed.publish(self)

    def _repositories_found(self, found: list[FoundRepository]) -> None:
        changed = found != self.found
        self.found = found
        if self.load_settings and not self.settings_drive:
            self._load_settings_from_drives()
        if changed:
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
        if previous is not None and opened is not None and previous.location is not None:
            if opened.location is not None and (
                opened.location.mountpoint == previous.location.mountpoint
            ):
                # The same mount (read-only before, mounted again read-write): whoever
                # mounted it first owns it, so it is still unmounted at quit.
                owned = previous.location.mounted_by_us or opened.location.mounted_by_us
                opened = replace(opened, location=replace(opened.location, mounted_by_us=owned))
            else:
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

    def found_on(self, found: FoundRepository) -> tuple[Disk | None, Partition | None]:
        """The disk and the partition a found repository is on, as the disk list has them."""
        disk = next((d for d in self.disks if d.device == found.disk), None)
        if disk is None:
            return None, None
        return disk, next((p for p in disk.partitions if p.number == found.partition), None)

    def partition_of(self, opened: OpenedRepository) -> Partition | None:
        """The partition an open repository is on, where the app knows it: one the app
        mounted, or one the probe found it on."""
        if opened.location is not None and opened.location.kind == "partition":
            device = opened.location.source
            return next((p for d in self.disks for p in d.partitions if p.device == device), None)
        real = os.path.realpath(opened.path)
        found = next((f for f in self.found if os.path.realpath(f.path) == real), None)
        return self.found_on(found)[1] if found is not None else None

    def reopened_writable(self, opened: OpenedRepository) -> OpenedRepository:
        """(In a worker thread.) ``opened`` with its drive mounted again read-write, the keys
        it unlocked kept (no passphrase asked again); the caller makes it the open one
        (:meth:`set_opened`). Raises when the drive is gone or will not mount read-write."""
        partition = self.partition_of(opened)
        if partition is None:  # the disk went away since the list was drawn
            raise UsageError(_("The drive of the open repository is not there any more."))
        location, path = mounted_writable(partition, opened.path)
        log.info("repository mounted again read-write: %s", path)
        return OpenedRepository(
            repo=opened.repo.at(path),
            path=path,
            label=opened.label,
            disk=opened.disk,
            writable=True,
            location=location,
        )

    def _find_writable_drive(self) -> str:

        if self.opened is not None and self.opened.writable and self.opened.drive is not None:
            return str(self.opened.drive)
        for found in self.found:
            root = settings.drive_root(found.path)
            if not found.mounted_by_us:
                if os.access(root, os.W_OK) and not os.statvfs(root).f_flag & os.ST_RDONLY:
                    return str(root)
                continue
            if self.opened is not None and str(self.opened.drive) == str(root):
                continue  # the open repository reads from this mount: leave it
            _disk, partition = self.found_on(found)
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
        """Show ``error`` in a dialog (message and hint); the full detail goes to the log
        (without a traceback for a drive that went: that is no fault of the program)."""

        log.error(
            "%s failed: %s",
            context or "work",
            error,
            exc_info=None
            if isinstance(error, LocationLost)
            else (type(error), error, error.__traceback__),
        )
        message, hint = describe_failure(error)
        self.push_screen(ErrorDialog(message, hint))
        if isinstance(error, LocationLost):
            self.location_lost()

    def location_lost(self) -> None:
        """The open repository's drive or share went away: the repository is closed, its
        dead mount cleaned (in a worker: unmounting may wait on the device), and the drive
        looked at again so that it is offered when it is back."""
        opened = self.opened
        if opened is None:
            return
        log.warning("the drive of %s went away: repository closed", opened.path)
        path = self.session_log.path
        if path is not None and opened.drive is not None and path.is_relative_to(opened.drive):
            self.session_log.stop_writing()
        if opened.drive is not None and str(opened.drive) == self.settings_drive:
            self.settings_drive = ""
        self.probed = {p for p in self.probed if p[0] != opened.disk}
        self.opened = None
        self.repository_changed.publish(self)
        for screen in self.screen_stack:  # no title bar names the closed repository
            if isinstance(screen, BaseScreen):
                screen.set_status(self.repository_status())
        self._clean_lost(opened)

    @work(thread=True, exit_on_error=False, group="lost", name="lost")
    def _clean_lost(self, opened: OpenedRepository) -> None:
        if opened.location is not None:
            try:
                locations.release_lost(opened.location)
            except HourglassError as e:
                log.warning("could not unmount %s: %s", opened.location.mountpoint, e.message)
        self.call_from_thread(self.refresh_disks)

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
