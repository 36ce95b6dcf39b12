"""Restore system: a whole-disk snapshot, chosen on a timeline or by typing a time to the
second, written to a disk (the one it was taken of, by default), after a typed confirmation
that names the disk and everything on it; then verified, with an offer to reboot."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, ContentSwitcher, Input, OptionList
from textual.worker import Worker

from imaging.errors import Cancelled
from recovery_ui import text
from recovery_ui.i18n import N_, _
from recovery_ui.messages import ProgressRelay
from recovery_ui.screens.base import BaseScreen
from recovery_ui.widgets.controls import Label, Static, checkbox, option
from recovery_ui.widgets.progress_panel import ProgressPanel
from recovery_ui.widgets.steps import Steps
from recovery_ui.widgets.timeline import Timeline

if TYPE_CHECKING:
    from imaging.disks.model import Disk
    from imaging.repository.store import Snapshot
    from imaging.restore import RestoreResult
    from recovery_ui.state import OpenedRepository

STEPS = (N_("Repository"), N_("When"), N_("Disk"), N_("Restore"), N_("Result"))
PANES = ("repository", "when", "target", "progress", "result")


def snapshot_details(snapshot: Snapshot) -> str:
    lines = [
        text.when(snapshot.time),
        _("Taken of: {source}").format(source=text.snapshot_source(snapshot)),
        _("Size: {size}").format(size=text.decimal_size(snapshot.size)),
    ]
    lines.extend("  " + text.image_line(image) for image in snapshot.images if image.name != "head")
    return "\n".join(lines)


def snapshot_serial(snapshot: Snapshot) -> str:
    disk = snapshot.record.disk
    return (disk and disk.serial) or ""


def default_target(snapshot: Snapshot, disks: list[Disk]) -> int:
    """Index of the disk to offer first: the one whose serial number is the snapshot's (the
    disk it was taken of), else the first."""
    serial = snapshot_serial(snapshot)
    for index, disk in enumerate(disks):
        if serial and disk.serial == serial:
            return index
    return 0


class RestoreSystemScreen(BaseScreen[None]):
    TITLE_TEXT = N_("Restore system")
    DEFAULT_CSS = """
    RestoreSystemScreen ContentSwitcher { height: 1fr; }
    RestoreSystemScreen #when, RestoreSystemScreen #target { height: 1fr; }
    RestoreSystemScreen #timeline-side { width: 1fr; height: 1fr; }
    RestoreSystemScreen #typed-side { width: 1fr; height: 1fr; }
    RestoreSystemScreen #timeline { margin: 0 1; }
    RestoreSystemScreen #targets { height: auto; max-height: 8; margin: 0 1; }
    RestoreSystemScreen #target-side { width: 1fr; height: 1fr; }
    RestoreSystemScreen #erase-side { width: 1fr; height: 1fr; }
    RestoreSystemScreen #chosen, RestoreSystemScreen #erase, RestoreSystemScreen #result-text {
        padding: 0 1; height: auto; }
    RestoreSystemScreen #typed { width: 24; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.opened: OpenedRepository | None = None
        self.snapshot: Snapshot | None = None
        self.target: Disk | None = None
        self.cancel = threading.Event()
        self.phase = ""

    def compose_body(self) -> ComposeResult:
        yield Steps([_(s) for s in STEPS])
        with ContentSwitcher(initial="repository"):
            with Vertical(id="repository"):
                yield Static(_("Choose the repository that holds the backups..."), classes="note")
            with Horizontal(id="when"):
                with Vertical(id="timeline-side"):
                    yield Label(_("Back to which point in time?"), classes="section first")
                    yield Timeline(id="timeline")
                with Vertical(id="typed-side"):
                    yield Label(_("Or type a date and time:"), classes="section first")
                    yield Input(placeholder="YYYY-MM-DD HH:MM:SS", id="typed", compact=True)
                    yield Static(
                        _("The newest backup taken at or before that second is chosen."),
                        classes="note",
                    )
                    yield Label(_("Chosen backup"), classes="section")
                    yield Static("", id="chosen", markup=False)
                    with Horizontal(classes="buttons"):
                        yield Button(_("Next"), id="when-next", compact=True, variant="primary")
            with Horizontal(id="target"):
                with Vertical(id="target-side"):
                    yield Label(_("Restore onto which disk?"), classes="section first")
                    yield OptionList(id="targets", compact=True)
                    yield Static("", id="check", classes="note")
                    yield checkbox(_("Make the last partition fill a larger disk"), id="grow")
                    with Horizontal(classes="buttons"):
                        yield Button(
                            _("Restore..."),
                            id="restore",
                            compact=True,
                            variant="error",
                            disabled=True,
                        )
                with Vertical(id="erase-side"):
                    yield Label(_("Everything on it will be erased:"), classes="section first")
                    yield Static("", id="erase", markup=False)
            with Vertical(id="progress"):
                yield Label(_("Restoring"), classes="section first")
                yield ProgressPanel(dedup=False)
                with Horizontal(classes="buttons"):
                    yield Button(_("Stop"), id="cancel", compact=True, variant="error")
            with Vertical(id="result"):
                yield Label("", id="result-title", classes="section first")
                yield Static("", id="result-text", markup=False)
                with Horizontal(classes="buttons"):
                    yield Button(_("Reboot now"), id="reboot", compact=True, variant="primary")
                    yield Button(_("Done"), id="done", compact=True)

    def on_mount(self) -> None:
        self.hourglass.cancel_events.add(self.cancel)
        from recovery_ui.screens.choose_repository import ChooseRepository

        self.app.push_screen(
            ChooseRepository(_("Which repository holds the backups?")), self._repository_chosen
        )

    def _step(self, pane: str) -> None:
        self.query_one(ContentSwitcher).current = pane
        self.query_one(Steps).current = PANES.index(pane)

    def action_back(self) -> None:
        pane = self.query_one(ContentSwitcher).current
        if pane == "progress":
            self._ask_cancel()
        elif pane == "target":
            self._step("when")
            self.query_one("#timeline", Timeline).focus()
        else:
            self.dismiss(None)

    # --- 1, 2: repository and time ----------------------------------------------------------

    def _repository_chosen(self, opened: OpenedRepository | None) -> None:
        if opened is None:
            self.dismiss(None)
            return
        self.opened = opened
        self.set_status(self.hourglass.repository_status())
        self._step("when")
        self.query_one("#chosen", Static).update(_("Reading the snapshots..."))
        self.load_snapshots()

    @work(thread=True, exclusive=True, exit_on_error=False, group="snapshots")
    def load_snapshots(self) -> None:
        assert self.opened is not None
        snapshots = [s for s in self.opened.repo.snapshots() if s.kind == "disk"]
        self.app.call_from_thread(self._snapshots_loaded, snapshots)

    def _snapshots_loaded(self, snapshots: list[Snapshot]) -> None:
        timeline = self.query_one("#timeline", Timeline)
        timeline.show(snapshots)
        if not snapshots:
            self.query_one("#chosen", Static).update(
                _("This repository holds no backup of a whole disk.")
            )
        timeline.focus()
        self._chosen_changed()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list.id == "timeline":
            self._chosen_changed()
        elif event.option_list.id == "targets":
            self._target_changed(event.option.id or "")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option_list.id == "timeline":
            self._when_next()
        elif event.option_list.id == "targets":
            button = self.query_one("#restore", Button)
            if not button.disabled:
                button.focus()

    def _chosen_changed(self) -> None:
        snapshot = self.query_one("#timeline", Timeline).chosen
        self.snapshot = snapshot
        if snapshot is not None:
            self.query_one("#chosen", Static).update(snapshot_details(snapshot))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "typed" and event.value.strip():
            timeline = self.query_one("#timeline", Timeline)
            ordered = sorted(timeline.snapshots.values(), key=lambda s: s.order)
            self.choose_typed(ordered, event.value.strip())

    @work(thread=True, exclusive=True, exit_on_error=False, group="typed")
    def choose_typed(self, snapshots: list[Snapshot], typed: str) -> None:
        """The newest snapshot at or before the typed second (the engine's selector)."""
        from imaging.selectors import select

        self.app.call_from_thread(self._typed_chosen, select(snapshots, typed))

    def _typed_chosen(self, snapshot: Snapshot) -> None:
        timeline = self.query_one("#timeline", Timeline)
        timeline.choose(snapshot.id)
        self._chosen_changed()
        self.query_one("#when-next", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        button = event.button.id
        if button == "when-next":
            self._when_next()
        elif button == "restore":
            self._confirm()
        elif button == "cancel":
            self._ask_cancel()
        elif button == "reboot":
            from recovery_ui.screens.home import HomeScreen

            home = next(s for s in self.app.screen_stack if isinstance(s, HomeScreen))
            home.action_do("reboot")
        elif button == "done":
            self.dismiss(None)

    # --- 3: the disk ------------------------------------------------------------------------

    def _when_next(self) -> None:
        if self.snapshot is None:
            return
        self._step("target")
        self._fill_targets()

    def _fill_targets(self) -> None:
        assert self.snapshot is not None
        disks = [d for d in self.hourglass.disks if not d.is_boot_disk]
        default = default_target(self.snapshot, disks)
        options = []
        for index, disk in enumerate(disks):
            line = disk.device
            if index == default and disk.serial and disk.serial == snapshot_serial(self.snapshot):
                line += "  " + _("[the disk this backup was taken of]")
            elif disk.holds_repository:
                line += "  " + _("[backup drive]")
            options.append(option(f"{line}\n  {text.disk_title(disk)}", id=disk.device))
        targets = self.query_one("#targets", OptionList)
        targets.set_options(options)
        if disks:
            targets.highlighted = default
            self._target_changed(disks[default].device)
        targets.focus()

    def _target_changed(self, device: str) -> None:
        disk = next((d for d in self.hourglass.disks if d.device == device), None)
        self.target = disk
        self.query_one("#restore", Button).disabled = True
        if disk is None:
            return
        self.query_one("#erase", Static).update("\n".join(text.erase_lines(disk)))
        self.query_one("#check", Static).update(_("Checking that the backup fits..."))
        self.check_target(disk)

    @work(thread=True, exclusive=True, exit_on_error=False, group="check")
    def check_target(self, disk: Disk) -> None:
        from imaging.disks.restore import check_disk_target
        from imaging.errors import HourglassError

        assert self.opened is not None and self.snapshot is not None
        try:
            check_disk_target(self.opened.repo, self.snapshot, disk.device)
        except HourglassError as e:
            problem = e.message + (f" {e.hint}" if e.hint else "")
            self.app.call_from_thread(self._checked, disk, problem)
            return
        self.app.call_from_thread(self._checked, disk, "")

    def _checked(self, disk: Disk, problem: str) -> None:
        if self.target is None or disk.device != self.target.device:
            return
        larger = self.snapshot is not None and disk.size > self.snapshot.size
        self.query_one("#grow").display = larger and not problem
        self.query_one("#check", Static).update(
            _("This disk cannot take the backup: {problem}").format(problem=problem)
            if problem
            else _("The backup fits on this disk.")
        )
        self.query_one("#restore", Button).disabled = bool(problem)

    def _confirm(self) -> None:
        from recovery_ui.screens.confirm import TypedConfirmation

        if self.target is None or self.snapshot is None:
            return
        disk, snapshot = self.target, self.snapshot

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._start(disk, snapshot)

        lines = [
            *text.erase_lines(disk),
            "",
            _("It will then hold the backup of:"),
            "  " + text.snapshot_line(snapshot),
        ]
        self.app.push_screen(
            TypedConfirmation(
                _("Erase this disk and restore the backup onto it?"),
                lines,
                _("Everything now on {device} is lost.").format(device=disk.device),
                os.path.basename(disk.device),
                _("Erase and restore"),
            ),
            confirmed,
        )

    # --- 4, 5: restore and result -----------------------------------------------------------

    def _start(self, disk: Disk, snapshot: Snapshot) -> None:
        assert self.opened is not None
        grow = bool(self.query_one("#grow").display and self.query_one("#grow").value)  # type: ignore[attr-defined]
        self.cancel.clear()
        self.phase = ""
        self._step("progress")
        self.query_one(ProgressPanel).set_phase(_("Writing the disk"))
        self.query_one("#cancel", Button).focus()
        self.restore(self.opened, snapshot, disk, grow, ProgressRelay(self, "restore"))

    def on_progress_relay_updated(self, message: ProgressRelay.Updated) -> None:
        event = message.relay.take()
        if event is None:
            return
        panel = self.query_one(ProgressPanel)
        if event.phase != self.phase:
            self.phase = event.phase
            panel.set_phase(
                _("Checking what was written") if event.phase == "verify" else _("Writing the disk")
            )
        panel.show(event)

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def restore(
        self,
        opened: OpenedRepository,
        snapshot: Snapshot,
        disk: Disk,
        grow: bool,
        relay: ProgressRelay,
    ) -> None:
        import logging

        from imaging.disks.restore import restore_disk
        from imaging.restore import RestoreOptions

        log = logging.getLogger("recovery_ui")
        log.info("restore of snapshot %s onto %s (%s)", snapshot.id, disk.device, disk.title())
        with opened.repo.reader():
            result = restore_disk(
                opened.repo,
                snapshot,
                disk.device,
                grow=grow,
                progress=relay,
                options=RestoreOptions(verify=True, cancel=self.cancel),
            )
        log.info(
            "restored %s bytes onto %s, verified: %s, damaged ranges: %d",
            result.written,
            disk.device,
            result.verified,
            len(result.damaged),
        )
        self.app.call_from_thread(self._finished, result)
        self.app.call_from_thread(self.hourglass.refresh_disks)

    def _ask_cancel(self) -> None:
        from recovery_ui.screens.question import Question

        def answered(yes: bool | None) -> None:
            if yes:
                self.cancel.set()
                self.query_one(ProgressPanel).set_phase(_("Stopping..."))

        self.app.push_screen(
            Question(
                _("Stop the restore?"),
                _("The disk is left half written: it will not start until a restore completes."),
                _("Stop"),
                _("Go on restoring"),
            ),
            answered,
        )

    def _finished(self, result: RestoreResult) -> None:
        ok = result.verified and not result.damaged
        lines = [
            _("Restored the backup of {when} onto {device}.").format(
                when=text.when(result.snapshot.time), device=result.target
            ),
            _("Written: {size}").format(size=text.decimal_size(result.written)),
            _("Checked: everything written was read back and matches the backup.")
            if result.verified
            else _("Not checked."),
        ]
        grown = getattr(result, "grown", "")
        if grown:
            lines.append(_("Grown: {what}").format(what=grown))
        for damaged in result.damaged:
            lines.append(
                _("Damaged in the repository, written as zeros: {what}").format(
                    what=damaged.describe()
                )
            )
        if ok:
            lines += ["", _("Remove the Hourglass stick and reboot to start the restored system.")]
        self._step("result")
        title = self.query_one("#result-title", Label)
        title.update(
            _("The system is restored.") if ok else _("The restore finished with problems.")
        )
        title.set_class(ok, "good")
        title.set_class(not ok, "error")
        self.query_one("#result-text", Static).update("\n".join(lines))
        self.query_one("#reboot" if ok else "#done", Button).focus()

    def expected(self, error: BaseException) -> bool:
        return isinstance(error, Cancelled) and self.cancel.is_set()

    def work_failed(self, worker: Worker[object], error: BaseException) -> None:
        if worker.name == "load_snapshots":
            self.query_one("#chosen", Static).update(getattr(error, "message", str(error)))
        elif worker.name == "restore":
            self._step("result")
            title = self.query_one("#result-title", Label)
            stopped = isinstance(error, Cancelled)
            title.update(_("The restore was stopped.") if stopped else _("The restore failed."))
            title.add_class("error")
            self.query_one("#result-text", Static).update(
                getattr(error, "message", str(error))
                + "\n"
                + _(
                    "If writing had started, the disk is only partly written and will not "
                    "start as it is: restore again to finish."
                )
            )
            self.query_one("#reboot", Button).display = False
            self.query_one("#done", Button).focus()
