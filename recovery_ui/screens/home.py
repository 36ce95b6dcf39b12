"""Home: the disks with a picture of their partitions, the repositories found on the
drives, the recent snapshots of the open repository, and what the person can do."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import OptionList

from imaging.appliance import power
from imaging.jobs import repositories
from recovery_ui import text
from recovery_ui.i18n import N_, _
from recovery_ui.screens.backup import BackupScreen
from recovery_ui.screens.base import BaseScreen
from recovery_ui.screens.choose_repository import ChooseRepository
from recovery_ui.screens.logs import LogsScreen
from recovery_ui.screens.network import NetworkScreen
from recovery_ui.screens.question import Question
from recovery_ui.screens.repository import RepositoryScreen
from recovery_ui.screens.restore_files import RestoreFilesScreen
from recovery_ui.screens.restore_system import RestoreSystemScreen
from recovery_ui.screens.settings import SettingsScreen
from recovery_ui.widgets.controls import Label, Options, Static, option
from recovery_ui.widgets.disk_map import DiskMap

# (id, message id), in the order shown; the digit keys 1..9, 0 choose them.
ACTIONS = (
    ("backup", N_("Back up")),
    ("restore-system", N_("Restore system")),
    ("restore-files", N_("Restore files")),
    ("repository", N_("Repository")),
    ("network", N_("Network")),
    ("settings", N_("Settings")),
    ("logs", N_("Logs")),
    ("shell", N_("Shell")),
    ("reboot", N_("Reboot")),
    ("poweroff", N_("Power off")),
)
RECENT = 6

if TYPE_CHECKING:
    from imaging.jobs.disks import FoundRepository


class HomeScreen(BaseScreen[None]):
    TITLE_TEXT = N_("Recovery")
    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(str((index + 1) % 10), f"do('{name}')", description, show=False)
            for index, (name, description) in enumerate(ACTIONS)
        ),
        Binding("f5", "refresh", N_("Look for disks again")),
    ]

    DEFAULT_CSS = """
    HomeScreen #menu { width: 24; height: 1fr; border-right: $hg-border $primary; }
    HomeScreen #overview { width: 1fr; height: 1fr; }
    HomeScreen #repos { height: auto; max-height: 6; margin: 0 1; }
    HomeScreen #snapshots { height: auto; padding: 0 1; }
    HomeScreen #disks { height: auto; }
    HomeScreen DiskMap { margin-bottom: 1; }
    HomeScreen DiskMap:last-child { margin-bottom: 0; }
    """

    def compose_body(self) -> ComposeResult:
        with Horizontal():
            yield Options(
                *[
                    option(f"{(index + 1) % 10} {_(label)}", id=name)
                    for index, (name, label) in enumerate(ACTIONS)
                ],
                id="menu",
                compact=True,
            )
            with VerticalScroll(id="overview"):
                yield Label(_("Disks"), classes="section first")
                yield Vertical(id="disks")
                yield Label(_("Repositories on the drives"), classes="section")
                yield Options(id="repos", compact=True)
                yield Static("", id="repos-note", classes="note")
                yield Label(_("Recent snapshots"), classes="section")
                yield Static("", id="snapshots", markup=False)

    def on_mount(self) -> None:
        self.hourglass.disks_changed.subscribe(self, self._disks_changed)
        self.hourglass.repository_changed.subscribe(self, self._repository_changed)
        self.query_one("#menu", OptionList).focus()
        self._show_disks()
        self._show_repository()

    def on_screen_resume(self) -> None:
        """Back from a backup (or a forget): the list of snapshots is read again."""
        self._show_repository()

    def on_unmount(self) -> None:
        self.hourglass.disks_changed.unsubscribe(self)
        self.hourglass.repository_changed.unsubscribe(self)

    def action_back(self) -> None:
        """The home screen is the bottom of the stack: nothing to go back to."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return action != "back"

    def action_refresh(self) -> None:
        self.hourglass.refresh_disks()

    # --- disks and repositories -------------------------------------------------------------

    def _disks_changed(self, _app: object) -> None:
        self._show_disks()

    def _repository_changed(self, _app: object) -> None:
        self.set_status(self.hourglass.repository_status())
        self._show_repository()

    def _show_disks(self) -> None:
        app = self.hourglass
        self._update_disk_maps()
        repos = self.query_one("#repos", OptionList)
        repos.clear_options()
        by_device = {d.device: d for d in app.disks}
        for index, found in enumerate(app.found):
            label = text.found_repository(found, by_device.get(found.disk))
            repos.add_option(option(label, id=f"found-{index}"))
        note = ""
        if not app.found:
            note = _(
                "No repository found on the drives. Plug in the backup drive, or create a "
                "repository when you back up."
            )
        self.query_one("#repos-note", Static).update(note)
        self.query_one("#repos", OptionList).display = bool(app.found)

    def _update_disk_maps(self) -> None:
        """One picture per disk: a disk that came is added, one that went is taken away, one
        that changed is drawn again, and the others are left as they are (disks come and go
        every second on some machines)."""
        box = self.query_one("#disks", Vertical)
        disks = self.hourglass.disks
        if not disks:
            box.remove_children()
            note = (
                _("No disk was found. Plug one in, then press F5 to look again.")
                if self.hourglass.disks_listed
                else _("Looking for disks...")
            )
            box.mount(Static(note, classes="note"))
            return
        box.query_children(Static).remove()
        wanted = {d.device for d in disks}
        shown: dict[str, DiskMap] = {}
        for existing in box.query_children(DiskMap):
            if existing.disk.device in wanted:
                shown[existing.disk.device] = existing
            else:
                existing.remove()
        previous: DiskMap | None = None
        for disk in disks:
            widget = shown.get(disk.device)
            if widget is None:
                widget = DiskMap(disk)
                if previous is not None:
                    box.mount(widget, after=previous)
                elif shown:
                    box.mount(widget, before=next(iter(shown.values())))
                else:
                    box.mount(widget)
            else:
                widget.show(disk)
            previous = widget

    def _show_repository(self) -> None:
        opened = self.hourglass.opened
        snapshots = self.query_one("#snapshots", Static)
        if opened is None:
            snapshots.update(
                _("Open a repository (choose it above) to see its snapshots: they are encrypted.")
            )
            return
        snapshots.update(_("Reading the snapshots..."))
        self.load_snapshots()

    @work(thread=True, exclusive=True, exit_on_error=False, group="snapshots")
    def load_snapshots(self) -> None:
        opened = self.hourglass.opened
        if opened is None:
            return
        listing = repositories.list_snapshots(opened.repo)
        snapshots = listing.snapshots
        lines = [text.snapshot_line(s) for s in reversed(snapshots[-RECENT:])]
        if not lines:
            lines = [_("The repository holds no snapshots yet.")]
        elif len(snapshots) > RECENT:
            lines.append(_("... and {count} older").format(count=len(snapshots) - RECENT))
        if listing.rollback:
            lines.insert(
                0,
                _(
                    "Warning: the newest snapshot this computer saw in this repository is gone "
                    "from the drive. The drive may have been put back to an older copy."
                ),
            )
        self.app.call_from_thread(self.query_one("#snapshots", Static).update, "\n".join(lines))

    # --- actions ----------------------------------------------------------------------------

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        option_id = event.option.id or ""
        if event.option_list.id == "menu":
            self.action_do(option_id)
        elif option_id.startswith("found-"):
            found = self.hourglass.found[int(option_id.removeprefix("found-"))]
            self.open_found(found)

    def open_found(self, found: FoundRepository) -> None:

        self.app.push_screen(ChooseRepository(_("Open a repository"), preselect=found))

    def action_do(self, name: str) -> None:
        """Start what the menu item ``name`` stands for."""
        if name in ("reboot", "poweroff"):
            self._ask_power(name)
        elif name == "shell":
            self._shell()
        else:
            self.app.push_screen(_screen_for(name))

    def _ask_power(self, name: str) -> None:

        if name == "reboot":
            title, question, yes = (
                _("Reboot"),
                _(
                    "Restart the computer now? Remove the Hourglass stick first if the computer "
                    "should start its own system."
                ),
                _("Reboot"),
            )
        else:
            title, question, yes = (
                _("Power off"),
                _("Turn the computer off now?"),
                _("Power off"),
            )
        if self.hourglass.busy():
            question += "\n" + _("Work is still running and would be lost.")

        def answered(yes: bool | None) -> None:
            if yes:
                self.power(name)

        self.app.push_screen(Question(title, question, yes), answered)

    @work(thread=True, exclusive=True, exit_on_error=False, group="power")
    def power(self, name: str) -> None:

        if name == "reboot":
            power.reboot()
        else:
            power.poweroff()

    def _shell(self) -> None:

        try:
            with self.app.suspend():
                print(_("Hourglass: a shell. Type exit to come back to the app."), flush=True)
                power.run_shell()
        except Exception as e:  # SuspendNotSupported under a test pilot or a web driver
            self.hourglass.report_error(e, "shell")


def _screen_for(name: str) -> BaseScreen[None]:

    screens: dict[str, type[BaseScreen[None]]] = {
        "backup": BackupScreen,
        "restore-system": RestoreSystemScreen,
        "restore-files": RestoreFilesScreen,
        "repository": RepositoryScreen,
        "network": NetworkScreen,
        "settings": SettingsScreen,
        "logs": LogsScreen,
    }
    return screens[name]()
