"""Restore system: a whole-disk snapshot, chosen on a timeline or by typing a time to the
second, written to a disk (the one it was taken of, by default), after a typed confirmation
that names the disk and everything on it; then verified, with an offer to reboot."""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from textual import events, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Checkbox, Input, OptionList
from textual.worker import Worker

from imaging import jobs
from imaging.errors import Cancelled, HourglassError, NoScratchSpace
from imaging.jobs import check_restore_target, select
from imaging.jobs.common import is_time_to_the_second, parse_time
from recovery_ui import text
from recovery_ui.i18n import N_, _
from recovery_ui.messages import ProgressRelay
from recovery_ui.screens.base import describe_failure, failure_reason
from recovery_ui.screens.confirm import TypedConfirmation
from recovery_ui.screens.wizard import CancelQuestion, WizardScreen
from recovery_ui.widgets.controls import Button, Label, Options, Static, checkbox, option
from recovery_ui.widgets.progress_panel import ProgressPanel
from recovery_ui.widgets.timeline import Timeline

if TYPE_CHECKING:
    from imaging.jobs import RestoreResult
    from imaging.jobs.disks import Disk
    from imaging.jobs.restore import ReplayPlan
    from imaging.progress import Progress
    from imaging.repository.records import Snapshot
    from recovery_ui.state import OpenedRepository


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


def replay_lines(plan: ReplayPlan) -> list[str]:
    """What the file journal's replay will do, in the app's words."""
    writes = [c for c in plan.changes if not c.removes]
    size = sum(c.entry.meta.size for c in writes if c.entry and c.entry.meta.ftype == "file")
    lines = [
        _(
            "Then the files are put back as they were at {time}, from the file journal of "
            "{host}: {written} written ({size}), {removed} removed."
        ).format(
            time=text.when(plan.at),
            host=plan.host,
            written=len(writes),
            size=text.decimal_size(size),
            removed=len(plan.changes) - len(writes),
        )
    ]
    if plan.outside:
        lines.append(
            _("Not put back: {count} changed files on no partition of this disk.").format(
                count=len(plan.outside)
            )
        )
    for gap in plan.gaps:
        lines.append(
            _("The journal has a gap from {start} to {end}: changes then may be missing.").format(
                start=text.when(datetime.fromtimestamp((gap.from_ns or 0) / 1e9)),
                end=text.when(datetime.fromtimestamp((gap.to_ns or 0) / 1e9)),
            )
        )
    return lines


GROW_WORTH_BYTES = 1_000_000_000  # the grow choice is ticked from this much extra room
GROW_WORTH_SHARE = 0.05  # or from this share of the disk


class RestoreSystemScreen(WizardScreen):
    TITLE_TEXT = N_("Restore system")
    STEPS = (N_("Repository"), N_("When"), N_("Disk"), N_("Restore"), N_("Result"))
    PANES = ("repository", "when", "target", "progress", "result")
    BACK: ClassVar[dict[str, tuple[str, str]]] = {"target": ("when", "#timeline")}
    CANCEL = CancelQuestion(
        N_("Stop the restore?"),
        N_("The disk is left half written: it will not start until a restore completes."),
        N_("Stop"),
        N_("Go on restoring"),
    )
    DEFAULT_CSS = """
    RestoreSystemScreen #when, RestoreSystemScreen #target { height: 1fr; }
    RestoreSystemScreen #timeline-side { width: 1fr; height: 1fr; }
    RestoreSystemScreen #typed-side { width: 1fr; height: 1fr; }
    RestoreSystemScreen #timeline { margin: 0 1; }
    RestoreSystemScreen #targets { height: auto; max-height: 8; margin: 0 1; }
    RestoreSystemScreen #target-side { width: 1fr; height: 1fr; }
    RestoreSystemScreen #erase-side { width: 1fr; height: 1fr; }
    RestoreSystemScreen #chosen, RestoreSystemScreen #erase { padding: 0 1; height: auto; }
    RestoreSystemScreen #typed { width: 24; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.snapshot: Snapshot | None = None
        self.target: Disk | None = None
        self.plan: jobs.GrowPlan | None = None  # what grow (or a smaller disk's shrink) does
        self.phase = ""
        self.has_journal = False  # the repository holds a file journal
        self.at: datetime | None = None  # a typed second: the journal is replayed up to it
        self.at_for = ""  # the snapshot that second chose
        self.replay: list[str] = []  # what the replay does, for the confirmation

    def compose_steps(self) -> ComposeResult:
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
                    id="typed-note",
                )
                yield Label(_("Chosen backup"), classes="section")
                yield Static("", id="chosen", markup=False)
                with Horizontal(classes="buttons"):
                    yield Button(_("Next"), id="when-next", compact=True, variant="primary")
        with Horizontal(id="target"):
            with Vertical(id="target-side"):
                yield Label(_("Restore onto which disk?"), classes="section first")
                yield Options(id="targets", compact=True)
                yield Static("", id="check", classes="note")
                yield checkbox(_("Grow the largest partition"), True, id="grow")
                yield Static("", id="plan", classes="note", markup=False)
                yield checkbox(
                    _("Give the restored disk new ids: for keeping both disks in this PC"),
                    False,
                    id="new-ids",
                )
                yield Static(
                    _(
                        "For a copy that stays in the PC beside the original disk: two disks "
                        "with the same ids confuse Windows and Linux."
                    ),
                    classes="note",
                )
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
        yield from self.compose_running(_("Restoring"), ProgressPanel(dedup=False), _("Stop"))

    def compose_result_buttons(self) -> ComposeResult:
        yield Button(_("Reboot now"), id="reboot", compact=True, variant="primary")
        yield Button(_("Done"), id="done", compact=True)

    def on_resize(self, event: events.Resize) -> None:
        # The disk list takes the rows the rest of the step leaves (its 8 of an 80x24
        # console at least): at 120x40 it showed 4 disks of 6 above 17 empty rows.
        self.query_one("#targets").styles.max_height = max(8, event.size.height - 20)

    def on_mount(self) -> None:
        self.choose_repository(_("Which repository holds the backups?"), self._repository_chosen)

    # --- 1, 2: repository and time ----------------------------------------------------------

    def _repository_chosen(self, opened: OpenedRepository) -> None:
        self.opened = opened
        self.step("when")
        self.query_one("#chosen", Static).update(_("Reading the snapshots..."))
        self.load_snapshots()

    @work(thread=True, exclusive=True, exit_on_error=False, group="snapshots")
    def load_snapshots(self) -> None:
        assert self.opened is not None
        listed = self.opened.repo.snapshots()
        snapshots = [s for s in listed if s.kind == "disk"]
        journal = any(s.kind == "journal" for s in listed)
        self.app.call_from_thread(self._snapshots_loaded, snapshots, journal)

    def _snapshots_loaded(self, snapshots: list[Snapshot], journal: bool = False) -> None:
        self.has_journal = journal
        if journal:
            self.query_one("#typed-note", Static).update(
                _(
                    "The newest backup taken at or before that second is chosen, and the "
                    "files saved after it are put back from the file journal up to that "
                    "second."
                )
            )
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
        if snapshot is None or snapshot.id != self.at_for:
            self.at = None  # another backup chosen on the timeline: that backup alone
        if snapshot is not None:
            details = snapshot_details(snapshot)
            if self.at is not None:
                details += "\n" + _(
                    "Then the files saved until {time} are put back from the file journal."
                ).format(time=text.when(self.at))
            self.query_one("#chosen", Static).update(details)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "typed" and event.value.strip():
            timeline = self.query_one("#timeline", Timeline)
            ordered = sorted(timeline.snapshots.values(), key=lambda s: s.order)
            self.choose_typed(ordered, event.value.strip())

    @work(thread=True, exclusive=True, exit_on_error=False, group="typed")
    def choose_typed(self, snapshots: list[Snapshot], typed: str) -> None:
        """The newest snapshot at or before the typed second (the engine's selector); with a
        file journal, that second too (the whole system as of it)."""
        snapshot = select(snapshots, typed)
        at = parse_time(typed) if self.has_journal and is_time_to_the_second(typed) else None
        self.app.call_from_thread(self._typed_chosen, snapshot, at)

    def _typed_chosen(self, snapshot: Snapshot, at: datetime | None = None) -> None:
        self.at, self.at_for = at, snapshot.id
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
        elif button == "reboot":
            self.hourglass.home_action("reboot")

    # --- 3: the disk ------------------------------------------------------------------------

    def _when_next(self) -> None:
        if self.snapshot is None:
            return
        self.step("target")
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

        assert self.opened is not None and self.snapshot is not None
        at = self.at
        replay: list[str] = []
        try:
            self._check_fits(self.opened, self.snapshot, disk)
            plan = jobs.resize_plan(self.snapshot, disk.device, grow=True)
            if at is not None:
                found = jobs.replay_plan(self.opened.repo, self.snapshot, at)
                replay = replay_lines(found) if found is not None else []
        except HourglassError as e:
            message, hint = describe_failure(e)
            problem = f"{message} {hint}" if hint else message
            self.app.call_from_thread(self._checked, disk, problem, None)
            return
        self.app.call_from_thread(self._checked, disk, "", plan, replay)

    def _check_fits(self, opened: OpenedRepository, snapshot: Snapshot, disk: Disk) -> None:
        """(In a worker thread.) :func:`check_restore_target`. A smaller disk shrinks a
        filesystem in a scratch copy beside the repository; a repository opened read-only
        (as Restore opens them) from a drive the app can mount has its drive mounted again
        read-write for it, rather than the copy going into the appliance's RAM or the disk
        being refused. Where the drive will not mount read-write, the first refusal stands."""
        try:
            check_restore_target(opened.repo, snapshot, disk.device)
        except NoScratchSpace as refused:
            if opened.writable:
                raise
            try:  # raises too where the app knows no partition for it (a share)
                reopened = self.hourglass.reopened_writable(opened)
            except HourglassError as e:
                logging.getLogger("recovery_ui").warning("cannot mount read-write: %s", e)
                raise refused from None
            self.app.call_from_thread(self._reopened, reopened)
            check_restore_target(reopened.repo, snapshot, disk.device)

    def _reopened(self, opened: OpenedRepository) -> None:
        self.hourglass.set_opened(opened)
        self.opened = opened

    def _checked(
        self, disk: Disk, problem: str, plan: jobs.GrowPlan | None, replay: list[str] | None = None
    ) -> None:
        if self.target is None or disk.device != self.target.device:
            return
        self.replay = replay or []
        self.plan = plan if plan is not None and plan.grown is not None else None
        larger = self.plan is not None and not self.plan.shrinks
        grow = self.query_one("#grow", Checkbox)
        grow.display = larger and not problem
        if larger:
            # Ticked where the extra room is worth having; a disk a few MB larger than the
            # original (the same model, say) keeps the original's layout unless asked.
            extra = self._extra_room()
            grow.value = extra >= GROW_WORTH_BYTES or extra >= GROW_WORTH_SHARE * disk.size
        self.query_one("#plan", Static).display = self.plan is not None and not problem
        self._show_plan()
        if problem:
            check = _("This disk cannot take the backup: {problem}").format(problem=problem)
        elif self.plan is not None and self.plan.shrinks:
            check = _("The disk is smaller: the backup fits once one partition shrinks.")
        else:
            check = _("The backup fits on this disk.")
        if self.replay and not problem:
            check += "\n" + "\n".join(self.replay)
        self.query_one("#check", Static).update(check)
        self.query_one("#restore", Button).disabled = bool(problem)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if event.checkbox.id == "grow":
            self._show_plan()

    def _show_plan(self) -> None:
        """What the grow choice does, or, unticked, that the extra room stays unused."""
        lines = self._plan_lines()
        if self.plan is not None and not self.plan.shrinks and not self._grow():
            # The room the plan would grow into: the larger disk's, and any the original
            # layout left free at its end.
            room = self._extra_room()
            grown = self.plan.grown
            if grown is not None:
                before = self.plan.before.partition(grown.number)
                room = (grown.sectors - before.sectors) * self.plan.after.sector_size
            extra = text.decimal_size(room)
            lines = [
                _("The partitions stay as they were: {extra} at the end stays unused.").format(
                    extra=extra
                )
            ]
        self.query_one("#plan", Static).update("\n".join(lines))

    def _confirm(self) -> None:

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
        if self._grow() or self._shrinks():
            lines += ["", *self._plan_lines()]
        if self._new_ids():
            lines += [
                "",
                _(
                    "The restored disk gets new ids (disk, partitions, filesystems, LVM), and "
                    "the references to them in its /etc/fstab and GRUB are updated."
                ),
            ]
        if self.at is not None and self.replay:
            lines += ["", *self.replay]
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

    def _grow(self) -> bool:
        """Whether the restore grows (the disk is larger and the box is ticked)."""
        return bool(self.plan is not None and self.query_one("#grow", Checkbox).value)

    def _extra_room(self) -> int:
        """How much larger the chosen disk is than the one the snapshot was taken of."""
        if self.target is None or self.snapshot is None:
            return 0
        return max(0, self.target.size - self.snapshot.size)

    def _new_ids(self) -> bool:
        """Whether the restored disk gets new ids (the box is ticked)."""
        return bool(self.query_one("#new-ids", Checkbox).value)

    def _shrinks(self) -> bool:
        """Whether the restore shrinks a partition (the disk is smaller: no choice)."""
        return bool(self.plan is not None and self.plan.shrinks)

    def _plan_lines(self) -> list[str]:
        """The grow or shrink plan in the app's words: before and after, partition by
        partition."""
        plan = self.plan
        if plan is None or plan.grown is None:
            return []
        ss = plan.after.sector_size
        before = plan.before.partition(plan.grown.number)
        if plan.shrinks:
            resized = _(
                "Partition {number} shrinks from {before} to {after} to fit; its data stays."
            )
        else:
            resized = _("Partition {number} grows from {before} to {after}.")
        lines = [
            resized.format(
                number=plan.grown.number,
                before=text.decimal_size(before.sectors * ss),
                after=text.decimal_size(plan.grown.sectors * ss),
            )
        ]
        moves = _("Partition {number} ({size}) moves to the end of the disk, unchanged.")
        for moved in plan.moved:
            if not moved.is_container:
                size = text.decimal_size(moved.sectors * ss)
                lines.append(moves.format(number=moved.number, size=size))
        return lines

    # --- 4, 5: restore and result -----------------------------------------------------------

    def _start(self, disk: Disk, snapshot: Snapshot) -> None:
        assert self.opened is not None
        grow, new_ids = self._grow(), self._new_ids()
        self.phase = ""
        relay = self.start_running(_("Writing the disk"), "restore")
        self.restore(self.opened, snapshot, disk, grow, new_ids, relay, self.at)

    def show_progress(self, event: Progress) -> None:
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
        new_ids: bool,
        relay: ProgressRelay,
        at: datetime | None = None,
    ) -> None:

        log = logging.getLogger("recovery_ui")
        log.info("restore of snapshot %s onto %s (%s)", snapshot.id, disk.device, disk.title())
        request = jobs.RestoreRequest(
            snapshot=snapshot.id,
            target=disk.device,
            grow=grow,
            new_ids=new_ids,
            cancel=self.cancel,
            at=at,
        )
        # The person confirmed on the typed confirmation screen, naming this disk.
        result = jobs.restore(opened.repo, request, confirm=jobs.no_confirm, progress=relay)
        log.info(
            "restored %s bytes onto %s, verified: %s, damaged ranges: %d",
            result.written,
            disk.device,
            result.verified,
            len(result.damaged),
        )
        self.app.call_from_thread(self._finished, result)
        self.app.call_from_thread(self.hourglass.refresh_disks)

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
        shrunk = getattr(result, "shrunk", "")
        if shrunk:
            lines.append(_("Shrunk: {what}").format(what=shrunk))
        new_ids = getattr(result, "new_ids", [])
        if new_ids:
            references = getattr(result, "references", [])
            lines.append(
                _("New ids: {count}; references updated: {files}").format(
                    count=len(new_ids), files="; ".join(references) or _("none")
                )
            )
        for kept in getattr(result, "kept_ids", []):
            lines.append(_("Id kept: {what}").format(what=kept))
        replayed = getattr(result, "replayed", "")
        if replayed:
            lines.append(_("From the file journal: {what}").format(what=replayed))
        for line in result.degraded:
            lines.append(_("Read around a location of the set: {what}").format(what=line))
        for damaged in result.damaged:
            lines.append(
                _("Damaged in the repository, written as zeros: {what}").format(
                    what=damaged.describe()
                )
            )
        if ok:
            lines += ["", _("Remove the Hourglass stick and reboot to start the restored system.")]
        self._result(
            _("The system is restored.") if ok else _("The restore finished with problems."),
            "\n".join(lines),
            good=ok,
            focus="#reboot" if ok else "#done",
        )

    def work_failed(self, worker: Worker[object], error: BaseException) -> None:
        if worker.name == "load_snapshots":
            self.query_one("#chosen", Static).update(failure_reason(error))
        elif worker.name == "restore":
            self.query_one("#reboot", Button).display = False
            self._result(
                _("The restore was stopped.")
                if isinstance(error, Cancelled)
                else _("The restore failed."),
                failure_reason(error)
                + "\n"
                + _(
                    "If writing had started, the disk is only partly written and will not "
                    "start as it is: restore again to finish."
                ),
                good=False,
            )
