"""Back up: a disk or some of its partitions, into a repository, with a summary first,
progress while it runs and a verified result. Cancelling leaves no snapshot (the engine
commits a snapshot only when everything is stored)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import OptionList, SelectionList
from textual.worker import Worker

from imaging import jobs
from imaging.errors import Cancelled, UsageError
from imaging.jobs import Check
from imaging.jobs.disks import backup_sources
from recovery_ui import text
from recovery_ui.i18n import N_, _, ngettext
from recovery_ui.messages import ProgressRelay
from recovery_ui.screens.base import failure_reason
from recovery_ui.screens.wizard import CancelQuestion, WizardScreen
from recovery_ui.widgets.controls import Button, Choices, Label, Options, Static, option
from recovery_ui.widgets.progress_panel import ProgressPanel

if TYPE_CHECKING:
    from imaging.jobs import BackupPlan, BackupResult
    from imaging.jobs.disks import Disk
    from imaging.repository.records import Snapshot
    from recovery_ui.state import OpenedRepository


class BackupScreen(WizardScreen):
    TITLE_TEXT = N_("Back up")
    STEPS = (N_("What"), N_("Where to"), N_("Check"), N_("Back up"), N_("Result"))
    PANES = ("source", "repository", "summary", "progress", "result")
    BACK: ClassVar[dict[str, tuple[str, str]]] = {
        "repository": ("source", "#disks"),
        "summary": ("source", "#disks"),
    }
    CANCEL = CancelQuestion(
        N_("Cancel the backup?"),
        N_("The backup stops and no snapshot is recorded. The disk is not changed."),
        N_("Cancel the backup"),
        N_("Go on backing up"),
    )
    DEFAULT_CSS = """
    BackupScreen #source { height: 1fr; }
    BackupScreen #disk-side { width: 1fr; height: 1fr; }
    BackupScreen #part-side { width: 1fr; height: 1fr; }
    BackupScreen #disks { height: auto; max-height: 10; margin: 0 1; }
    BackupScreen #parts { height: auto; max-height: 12; margin: 0 1; }
    BackupScreen #summary-text { padding: 0 1; height: auto; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.source_disk: Disk | None = None
        self.plan: BackupPlan | None = None
        self.committed: Snapshot | None = None

    def compose_steps(self) -> ComposeResult:
        with Horizontal(id="source"):
            with Vertical(id="disk-side"):
                yield Label(_("Which disk do you want to back up?"), classes="section first")
                yield Options(id="disks", compact=True)
                yield Static("", id="disk-note", classes="note")
            with Vertical(id="part-side"):
                yield Label(_("Which partitions?"), classes="section first")
                yield Choices[int](id="parts", compact=True)
                yield Static(
                    _(
                        "All partitions: the whole disk, with its partition table and boot "
                        "code, so it can be restored to a new disk."
                    ),
                    classes="note",
                )
                with Horizontal(classes="buttons"):
                    yield Button(_("Next"), id="source-next", compact=True, variant="primary")
        with Vertical(id="repository"):
            yield Static(_("Choose where the backup goes..."), classes="note")
        with Vertical(id="summary"):
            yield Label(_("Check before the backup starts"), classes="section first")
            yield Static(_("Working out what to read..."), id="summary-text", markup=False)
            with Horizontal(classes="buttons"):
                yield Button(
                    _("Start the backup"),
                    id="start",
                    compact=True,
                    variant="primary",
                    disabled=True,
                )
                yield Button(_("Choose another repository"), id="other-repo", compact=True)
        yield from self.compose_running(
            _("Backing up"), ProgressPanel(id="panel"), _("Cancel the backup")
        )

    def on_mount(self) -> None:
        self.hourglass.disks_changed.subscribe(self, self._disks_changed)
        self._fill_disks()

    def on_unmount(self) -> None:
        self.hourglass.disks_changed.unsubscribe(self)

    # --- 1: what ----------------------------------------------------------------------------

    def _candidates(self) -> list[Disk]:
        opened = self.hourglass.opened
        return backup_sources(self.hourglass.disks, repository_disk=opened.disk if opened else "")

    def step(self, pane: str) -> None:
        super().step(pane)
        if pane == "source":
            self._fill_disks()  # a repository opened meanwhile: its drive is no source

    def _disks_changed(self, _app: object) -> None:
        if self.pane == "source":
            self._fill_disks()

    def _fill_disks(self) -> None:
        disks = self._candidates()
        options = []
        for disk in disks:
            options.append(option(text.disk_option(disk), id=disk.device))
        widget = self.query_one("#disks", OptionList)
        widget.set_options(options)
        note = "" if disks else _("No disk with partitions was found. Plug in the disk.")
        self.query_one("#disk-note", Static).update(note)
        # The disk chosen before, if still offered; else the first that is no backup drive:
        # a backup drive is never preselected (the person chooses it, if at all).
        chosen = self.source_disk.device if self.source_disk else ""
        first = next((i for i, d in enumerate(disks) if d.device == chosen), None)
        if first is None:
            first = next((i for i, d in enumerate(disks) if not d.holds_repository), None)
        if first is not None:
            widget.highlighted = first
            self._fill_partitions(disks[first])
        else:
            widget.highlighted = None
            self.source_disk = None
            self.query_one("#parts", SelectionList).clear_options()
        widget.focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list.id == "disks":
            disk = next((d for d in self._candidates() if d.device == event.option.id), None)
            if disk is not None:
                self._fill_partitions(disk)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option_list.id != "disks":
            return
        if isinstance(event.option_list, Options) and event.option_list.by_mouse:
            self.query_one("#parts", SelectionList).focus()  # clicked: its partitions next
        else:
            self._source_chosen()  # Enter: Next, with the partitions ticked

    def _fill_partitions(self, disk: Disk) -> None:
        self.source_disk = disk
        parts: SelectionList[int] = self.query_one("#parts", SelectionList)
        parts.clear_options()
        for p in disk.partitions:
            if p.role == "extended" or not p.device:
                continue
            parts.add_option((text.partition_item(p), p.number, True))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        button = event.button.id
        if button == "source-next":
            self._source_chosen()
        elif button == "start":
            self._start()
        elif button == "other-repo":
            self._choose_repository()

    def _source_chosen(self) -> None:
        disk = self.source_disk
        if disk is None:
            return
        chosen = set(self.query_one("#parts", SelectionList).selected)
        imageable = [p for p in disk.partitions if p.role != "extended" and p.device]
        if not chosen:
            self.hourglass.report_error(UsageError(_("Choose at least one partition.")))
            return
        if chosen == {p.number for p in imageable}:
            self.sources = [disk.device]
        else:
            self.sources = [p.device for p in imageable if p.number in chosen]
        self._choose_repository()

    # --- 2: where to ------------------------------------------------------------------------

    def _choose_repository(self) -> None:
        self.step("repository")
        self.choose_repository(
            _("Where should the backup go?"),
            self._repository_chosen,
            writable=True,
            allow_create=True,
            source=self.source_disk.device if self.source_disk else "",
        )

    def _repository_chosen(self, opened: OpenedRepository) -> None:
        self.opened = opened
        self.step("summary")
        self.query_one("#start", Button).disabled = True
        self.query_one("#summary-text", Static).update(_("Working out what to read..."))
        self.make_plan()

    # --- 3: check ---------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="plan")
    def make_plan(self) -> None:

        assert self.opened is not None and self.source_disk is not None
        preview = jobs.plan_backup(
            self.opened.repo, jobs.BackupRequest(sources=tuple(self.sources))
        )
        plan, to_read, previous = preview.plan, preview.to_read, preview.previous
        free = preview.free  # None: not known (an object store)
        lines = [
            _("Back up: {what}").format(
                what=f"{self.source_disk.device}, {text.disk_title(self.source_disk)}"
            ),
            "  "
            + (
                _("the whole disk (partition table, boot code and every partition)")
                if plan.kind == "disk" and self.sources == [self.source_disk.device]
                else ", ".join(os.path.basename(s) for s in self.sources)
            ),
            _("Into: {label}").format(label=self.opened.label),
            "",
            _("Size of what is backed up: {size}").format(size=text.decimal_size(plan.size)),
            _("Data to read (the rest is unused space): about {size}").format(
                size=text.decimal_size(to_read)
            ),
        ]
        if free is not None:
            lines.append(
                _("Free space on the backup drive: {size}").format(size=text.decimal_size(free))
            )
        if previous is not None:
            lines.append(
                _(
                    "This disk was backed up before ({when}): only what changed since is "
                    "stored again."
                ).format(when=text.when(previous.time))
            )
        elif free is not None and to_read > free:
            lines.append(
                _(
                    "The data may not fit (it is compressed, so it may). Free some space or use "
                    "a larger drive if the backup stops."
                )
            )
        lines.append("")
        lines.append(
            _("The backup is checked when it is done. Cancelling leaves no partial backup.")
        )
        self.app.call_from_thread(self._planned, plan, "\n".join(lines))

    def _planned(self, plan: BackupPlan, summary: str) -> None:
        self.plan = plan
        self.query_one("#summary-text", Static).update(summary)
        start = self.query_one("#start", Button)
        start.disabled = False
        start.focus()

    # --- 4: back up -------------------------------------------------------------------------

    def _start(self) -> None:
        if self.plan is None or self.opened is None:
            return
        self.committed = None
        relay = self.start_running(_("Reading and storing the disk"), "backup")
        self.back_up(self.plan, self.opened, relay)

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def back_up(self, plan: BackupPlan, opened: OpenedRepository, relay: ProgressRelay) -> None:

        log = logging.getLogger("recovery_ui")
        log.info("backup of %s into %s", " ".join(self.sources), opened.path)

        def committed(snapshot: Snapshot) -> None:
            log.info("snapshot %s committed", snapshot.id)
            self.committed = snapshot
            self.app.call_from_thread(self._checking)

        request = jobs.BackupRequest(plan=plan, cancel=self.cancel)
        result = jobs.backup(opened.repo, request, progress=relay, on_committed=committed)
        log.info(
            "check (%s) of %s: %s",
            result.check.value,
            result.snapshot.id[:12],
            "ok" if result.ok else "DAMAGED",
        )
        self.app.call_from_thread(self._finished, result)

    def _checking(self) -> None:
        self.query_one(ProgressPanel).set_phase(_("Checking the backup"), counts_bytes=False)
        self.query_one("#cancel", Button).disabled = True

    def can_cancel(self) -> bool:
        return self.committed is None  # recorded already: the check runs to its end

    # --- 5: result --------------------------------------------------------------------------

    def _finished(self, result: BackupResult) -> None:

        snapshot, report = result.snapshot, result.report
        stats = snapshot.record.stats
        lines = [
            _("Snapshot of {when}").format(when=text.when(snapshot.time)),
            _("Size: {size}; data read: {read}").format(
                size=text.decimal_size(snapshot.size),
                read=text.decimal_size(stats.read),
            ),
            # Two amounts people took for the same thing (issue 22): the data that was new,
            # and the room it takes once compressed and encrypted.
            _("New data: {new}; already in the repository, so not stored again: {dedup}").format(
                new=text.decimal_size(stats.new_bytes),
                dedup=text.decimal_size(stats.dedup_bytes),
            ),
            (
                _("Room it takes on the backup drive, compressed: {size}")
                if self.opened is None or self.opened.drive is not None
                else _("Room it takes in the object store, compressed: {size}")
            ).format(size=text.decimal_size(snapshot.stored)),
            text.time_taken(stats.elapsed),
            "",
        ]
        good = report is None or report.ok
        if report is None:
            pass  # not asked for (the app asks for the default check)
        elif report.ok and result.check is Check.DATA:
            lines.append(
                ngettext(
                    "Checked: {count} stored piece was read back and is intact.",
                    "Checked: all {count} stored pieces were read back and are intact.",
                    report.checked,
                ).format(count=report.checked)
            )
        elif report.ok:
            lines.append(
                ngettext(
                    "Checked: the {count} stored piece the backup needs is in the repository.",
                    "Checked: all {count} stored pieces the backup needs are in the repository.",
                    report.chunks,
                ).format(count=report.chunks)
            )
        else:
            lines.append(_("The check found damage:"))
            lines.extend(d.describe() for d in report.damage[:10])
        unreadable = [i.name for i in snapshot.images if i.unreadable]
        if unreadable:
            lines.append(
                _("Parts of the disk could not be read: {images}").format(
                    images=", ".join(unreadable)
                )
            )
        title = (
            _("The backup is complete and checked.")
            if good
            else _("The backup was recorded, but the check found damage.")
        )
        self._result(title, "\n".join(lines), good=good)

    def work_failed(self, worker: Worker[object], error: BaseException) -> None:
        if worker.name == "make_plan":
            self.query_one("#summary-text", Static).update(
                _("The backup cannot start: {reason}").format(reason=failure_reason(error))
            )
        elif worker.name == "back_up":
            if self.committed is not None:
                self._result(
                    _("The backup was recorded, but checking it failed."),
                    _("Snapshot of {when}.").format(when=text.when(self.committed.time))
                    + "\n"
                    + failure_reason(error),
                    good=False,
                )
            elif isinstance(error, Cancelled):
                self._result(
                    _("The backup was cancelled."),
                    _("No snapshot was recorded. The repository holds what it held before."),
                    good=False,
                )
            else:
                self._result(
                    _("The backup failed."),
                    _("No snapshot was recorded.") + "\n" + failure_reason(error),
                    good=False,
                )
