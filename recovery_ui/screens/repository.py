"""Repository: statistics, a time-boxed verify, forgetting old snapshots by a policy (with a
preview of what goes), freeing the space failed backups left (gc), changing the passphrase,
adding a recovery key."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import ContentSwitcher, DataTable, Input, OptionList
from textual.worker import Worker

from imaging import jobs
from imaging.errors import UsageError
from imaging.jobs import repositories
from imaging.jobs.repositories import new_recovery_key
from recovery_ui import text
from recovery_ui.i18n import N_, _, ngettext
from recovery_ui.messages import ProgressRelay
from recovery_ui.screens.base import BaseScreen, failure_reason
from recovery_ui.screens.confirm import TypedConfirmation
from recovery_ui.screens.question import judge_new_passphrase
from recovery_ui.screens.recovery_key import RecoveryKeyDialog
from recovery_ui.widgets.controls import Button, Label, Options, Secret, Static, checkbox, option
from recovery_ui.widgets.progress_panel import ProgressPanel

if TYPE_CHECKING:
    from imaging.jobs import ForgetPlan, GcResult, VerifyReport
    from imaging.jobs.repositories import RepositoryInfo
    from imaging.repository.records import Snapshot
    from recovery_ui.state import OpenedRepository

TABS = (
    ("stats", N_("Statistics")),
    ("verify", N_("Verify")),
    ("forget", N_("Forget old")),
    ("space", N_("Free space")),
    ("key", N_("Passphrase")),
    ("recovery", N_("Recovery key")),
)
BUDGETS = (
    ("300", N_("5 minutes")),
    ("900", N_("15 minutes")),
    ("3600", N_("1 hour")),
    ("0", N_("No limit")),
)
POLICY = (
    ("last", N_("The last backups"), "3"),
    ("daily", N_("One a day, for days"), "7"),
    ("weekly", N_("One a week, for weeks"), "4"),
    ("monthly", N_("One a month, for months"), "12"),
)
GC_PHASES = {
    "gc-mark": N_("Finding what the backups use"),
    "gc-sweep": N_("Setting aside pieces no backup uses"),
}


class RepositoryScreen(BaseScreen[None]):
    TITLE_TEXT = N_("Repository")
    DEFAULT_CSS = """
    RepositoryScreen #tabs { height: 1; margin: 0 0 1 0; }
    RepositoryScreen ContentSwitcher { height: 1fr; }
    RepositoryScreen ContentSwitcher > * { height: 1fr; }
    RepositoryScreen #budget { height: auto; margin: 0 1; width: 30; }
    RepositoryScreen .row { height: 1; }
    RepositoryScreen .row Label { width: 28; padding: 0 1; }
    RepositoryScreen .row Input { width: 8; }
    RepositoryScreen #forget-table { height: 1fr; margin: 0 1; }
    RepositoryScreen Input.secret { width: 50; }
    RepositoryScreen #stats-text, RepositoryScreen #verify-result, RepositoryScreen #key-result,
    RepositoryScreen #slots, RepositoryScreen #gc-result { padding: 0 1; height: auto; }
    """
    REBUILDABLE: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.opened: OpenedRepository | None = None
        self.decision: ForgetPlan | None = None
        self.gc_phase = ""

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="tabs"):
            for tab, label in TABS:
                yield Button(_(label), id=f"tab-{tab}", compact=True)
        with ContentSwitcher(initial="stats"):
            with VerticalScroll(id="stats"):
                yield Static(_("Reading the repository..."), id="stats-text", markup=False)
            with Vertical(id="verify"):
                yield Label(_("How long may the check take?"), classes="section first")
                yield Options(
                    *[option(_(label), id=seconds) for seconds, label in BUDGETS],
                    id="budget",
                    compact=True,
                )
                yield checkbox(
                    _("Read and check all stored data (finds damage; slower)"), True, id="read-data"
                )
                yield Static(
                    _("A check stopped by its time limit goes on where it stopped next time."),
                    classes="note",
                )
                with Horizontal(classes="buttons"):
                    yield Button(
                        _("Start the check"), id="verify-go", compact=True, variant="primary"
                    )
                yield ProgressPanel(dedup=False, id="verify-progress")
                yield Static("", id="verify-result", markup=False)
            with Vertical(id="forget"):
                yield Label(_("Which backups to keep (of each disk):"), classes="section first")
                for name, label, default in POLICY:
                    with Horizontal(classes="row"):
                        yield Label(_(label))
                        yield Input(default, id=f"keep-{name}", compact=True)
                with Horizontal(classes="buttons"):
                    yield Button(_("Show what would go"), id="forget-preview", compact=True)
                    yield Button(
                        _("Forget..."), id="forget-go", compact=True, variant="error", disabled=True
                    )
                yield Static("", id="forget-summary", classes="note", markup=False)
                yield DataTable(id="forget-table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="space"):
                yield Label(_("Free space left by failed backups"), classes="section first")
                yield Static(
                    _(
                        "A backup that failed or was stopped leaves stored pieces that no "
                        "backup uses. This frees them; every backup stays as it is. To free "
                        "more, forget old backups (Forget old)."
                    ),
                    classes="note",
                )
                with Horizontal(classes="buttons"):
                    yield Button(
                        _("Free space left by failed backups"),
                        id="gc-go",
                        compact=True,
                        variant="primary",
                    )
                yield ProgressPanel(dedup=False, id="gc-progress")
                yield Static("", id="gc-result", markup=False)
            with Vertical(id="key"):
                yield Label(_("Change the passphrase"), classes="section first")
                yield Label(_("New passphrase:"), classes="field-label")
                yield Secret(password=True, id="key1", classes="secret", compact=True)
                yield Label(_("Type it again:"), classes="field-label")
                yield Secret(password=True, id="key2", classes="secret", compact=True)
                yield Static(
                    _("The old passphrase stops working. Recovery keys keep working."),
                    classes="note",
                )
                with Horizontal(classes="buttons"):
                    yield Button(_("Change"), id="key-go", compact=True, variant="primary")
                yield Static("", id="key-result", markup=False)
            with Vertical(id="recovery"):
                yield Label(_("Recovery key"), classes="section first")
                yield Static(
                    _(
                        "A recovery key is a long code to write down or photograph. It opens the "
                        "repository if the passphrase is forgotten. Keep it somewhere safe, "
                        "away from the backup drive."
                    ),
                    classes="note",
                )
                yield Static("", id="slots", markup=False)
                with Horizontal(classes="buttons"):
                    yield Button(
                        _("Create a recovery key"),
                        id="recovery-go",
                        compact=True,
                        variant="primary",
                    )

    def on_mount(self) -> None:
        self.query_one("#verify-progress").display = False
        self.query_one("#gc-progress").display = False
        table = self.query_one("#forget-table", DataTable)
        table.add_columns(_("Backup"), _("Of"), _("Size"), _("Kept?"))
        self.query_one("#budget", OptionList).highlighted = 1
        self.choose_repository(_("Which repository?"), self._repository_chosen, writable=True)

    def _repository_chosen(self, opened: OpenedRepository) -> None:
        self.opened = opened
        self._tab("stats")

    def _tab(self, tab: str) -> None:
        self.query_one(ContentSwitcher).current = tab
        for name, _label in TABS:
            self.query_one(f"#tab-{name}", Button).variant = "primary" if name == tab else "default"
        if tab == "stats":
            self.load_stats()
        elif tab == "recovery":
            self._show_slots()
        first = {
            "stats": "#tab-stats",
            "verify": "#budget",
            "forget": "#keep-last",
            "space": "#gc-go",
            "key": "#key1",
            "recovery": "#recovery-go",
        }[tab]
        self.query_one(first).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        button = event.button.id or ""
        if button.startswith("tab-"):
            self._tab(button.removeprefix("tab-"))
        elif button == "verify-go":
            self._verify()
        elif button == "forget-preview":
            self._preview()
        elif button == "forget-go":
            self._confirm_forget()
        elif button == "gc-go":
            self._free_space()
        elif button == "key-go":
            self._change_key()
        elif button == "recovery-go":
            self.add_recovery_key()

    # --- statistics -------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="stats")
    def load_stats(self) -> None:

        assert self.opened is not None
        info = repositories.info(self.opened.repo)
        self.app.call_from_thread(self._stats_loaded, info)

    def _stats_loaded(self, info: RepositoryInfo) -> None:
        assert self.opened is not None
        lines = [
            _("Where: {label}").format(label=self.opened.label),
            _("Folder: {path}").format(path=info.path),
            _("Encryption: {what}").format(
                what=ngettext(
                    "AES-256 ({count} key)", "AES-256 ({count} keys)", info.key_slots
                ).format(count=info.key_slots)
                if info.encryption != "none"
                else _("none")
            ),
            ngettext("Backups: {count}", "Backups: {count}", info.snapshots).format(
                count=info.snapshots
            )
            + "; "
            + ngettext("of {sources} disk", "of {sources} disks", info.sources).format(
                sources=info.sources
            ),
            _("Size of the backed up disks: {size}").format(
                size=text.decimal_size(info.logical_bytes)
            ),
            _("Data in them: {size}").format(size=text.decimal_size(info.data_bytes)),
            text.deduplication(info.data_bytes, info.unique_bytes),
            _("Stored on the drive (compressed): {size} in {chunks} pieces").format(
                size=text.decimal_size(info.stored_bytes), chunks=info.chunks
            ),
        ]
        self.query_one("#stats-text", Static).update("\n".join(lines))

    # --- verify -----------------------------------------------------------------------------

    def _verify(self) -> None:
        budget = self.query_one("#budget", OptionList)
        seconds = int(BUDGETS[budget.highlighted or 0][0])
        read_data = bool(self.query_one("#read-data").value)  # type: ignore[attr-defined]
        panel = self.query_one("#verify-progress", ProgressPanel)
        panel.display = True
        panel.set_phase(_("Checking the repository"), counts_bytes=False)
        self.query_one("#verify-result", Static).update("")
        self.query_one("#verify-go", Button).disabled = True
        self.verify(seconds or None, read_data, ProgressRelay(self, "verify"))

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def verify(self, max_time: float | None, read_data: bool, relay: ProgressRelay) -> None:

        assert self.opened is not None
        request = jobs.VerifyRequest(read_data=read_data, max_time=max_time)
        report = jobs.verify(self.opened.repo, request, progress=relay)
        logging.getLogger("recovery_ui").info(
            "verify: %d of %d chunks checked, %d problem(s), complete: %s",
            report.checked,
            report.chunks,
            len(report.damage),
            report.complete,
        )
        self.app.call_from_thread(self._verified, report)

    def _verified(self, report: VerifyReport) -> None:
        self.query_one("#verify-go", Button).disabled = False
        backups = ngettext("{count} backup", "{count} backups", report.snapshots).format(
            count=report.snapshots
        )
        pieces = (
            _("{checked} of {chunks} stored pieces read and checked ({size}).")
            if report.data_read
            else _("{checked} of {chunks} stored pieces found in place (not read).")
        ).format(
            checked=report.checked,
            chunks=report.chunks,
            size=text.decimal_size(report.checked_bytes),
        )
        lines = [f"{backups}; {pieces}"]
        if report.resumed:
            lines.append(_("Went on where the previous check stopped."))
        if not report.complete:
            lines.append(_("The time was up: start the check again to go on."))
        if report.ok:
            lines.append(_("No damage found."))
        else:
            lines.append(
                ngettext(
                    "{count} problem found:", "{count} problems found:", len(report.damage)
                ).format(count=len(report.damage))
            )
            lines.extend(d.describe() for d in report.damage[:20])
        result = self.query_one("#verify-result", Static)
        result.update("\n".join(lines))
        result.set_class(not report.ok, "error")

    # --- forget -----------------------------------------------------------------------------

    def _policy_numbers(self) -> dict[str, int]:
        numbers = {}
        for name, _label, _default in POLICY:
            value = self.query_one(f"#keep-{name}", Input).value.strip() or "0"
            if not value.isdigit():
                raise UsageError(_("Type a whole number for each kind of backup to keep."))
            numbers[name] = int(value)
        return numbers

    def _preview(self) -> None:
        try:
            numbers = self._policy_numbers()
        except UsageError as e:
            self.hourglass.report_error(e)
            return
        if not any(numbers.values()):
            self.hourglass.report_error(
                UsageError(
                    _("Keep at least one backup."),
                    _("A policy that keeps nothing would forget every backup."),
                )
            )
            return
        self.preview(numbers)

    @work(thread=True, exclusive=True, exit_on_error=False, group="forget")
    def preview(self, numbers: dict[str, int]) -> None:

        assert self.opened is not None
        request = jobs.ForgetRequest(policy=jobs.Policy(**numbers))
        decision = jobs.plan_forget(self.opened.repo, request)
        self.app.call_from_thread(self._previewed, decision)

    def _previewed(self, decision: ForgetPlan) -> None:
        self.decision = decision
        table = self.query_one("#forget-table", DataTable)
        table.clear()
        rows: list[tuple[Snapshot, str]] = [(s, _("kept")) for s, _reasons in decision.keep]
        rows += [(s, _("GOES")) for s in decision.remove]
        for snapshot, verdict in sorted(rows, key=lambda r: r[0].order, reverse=True):
            table.add_row(
                text.when(snapshot.time),
                text.snapshot_source(snapshot),
                text.decimal_size(snapshot.size),
                verdict,
            )
        self.query_one("#forget-summary", Static).update(
            _("{keep} kept, {remove} would be forgotten.").format(
                keep=len(decision.keep), remove=len(decision.remove)
            )
        )
        self.query_one("#forget-go", Button).disabled = not decision.remove

    def on_input_changed(self, event: Input.Changed) -> None:
        """A changed policy makes the preview stale: Forget waits for a new preview, so the
        dialog's count is always the one shown (a stale "type 3" beside "2 would be
        forgotten")."""
        if not (event.input.id or "").startswith("keep-") or self.decision is None:
            return
        self.decision = None
        self.query_one("#forget-table", DataTable).clear()
        self.query_one("#forget-go", Button).disabled = True
        self.query_one("#forget-summary", Static).update(
            _("The choice changed: press Show what would go again.")
        )

    def _confirm_forget(self) -> None:

        if self.decision is None or not self.decision.remove or self.opened is None:
            return
        decision = self.decision
        remove = sorted(decision.remove, key=lambda s: s.order)
        count = str(len(remove))
        lines = [_("Repository: {label}").format(label=self.opened.label), ""]
        lines += [text.snapshot_line(s) for s in remove]

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.query_one("#forget-go", Button).disabled = True
                self.forget(decision)

        self.app.push_screen(
            TypedConfirmation(
                _("Forget these backups?"),
                lines,
                _("They cannot be restored afterwards. Their space on the drive is freed."),
                count,
                _("Forget them"),
            ),
            confirmed,
        )

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def forget(self, decision: ForgetPlan) -> None:

        assert self.opened is not None
        log = logging.getLogger("recovery_ui")
        remove = decision.remove
        jobs.apply_forget(self.opened.repo, decision)  # exactly what was shown and confirmed
        for snapshot in remove:
            log.info("forgot snapshot %s (%s)", snapshot.id, text.when(snapshot.time))
        result = jobs.gc(self.opened.repo)
        log.info("gc: freed %d chunks, %d bytes", result.freed, result.freed_bytes)
        summary = ngettext(
            "Forgot {count} backup; freed {size} on the drive.",
            "Forgot {count} backups; freed {size} on the drive.",
            len(remove),
        ).format(count=len(remove), size=text.decimal_size(result.freed_bytes))
        if result.waiting_batches:
            summary += " " + _("More space is freed after the work running now has finished.")
        self.app.call_from_thread(self._forgotten, summary)

    def _forgotten(self, summary: str) -> None:
        self.query_one("#forget-table", DataTable).clear()
        self.decision = None
        self.query_one("#forget-summary", Static).update(summary)
        self.hourglass.repository_changed.publish(self.hourglass)

    # --- space left by failed backups ------------------------------------------------------

    def _free_space(self) -> None:
        panel = self.query_one("#gc-progress", ProgressPanel)
        panel.display = True
        panel.set_phase(_(GC_PHASES["gc-mark"]), counts_bytes=False)
        self.gc_phase = "gc-mark"
        self.query_one("#gc-result", Static).update("")
        self.query_one("#gc-go", Button).disabled = True
        self.free_space(ProgressRelay(self, "gc"))

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def free_space(self, relay: ProgressRelay) -> None:

        assert self.opened is not None
        result = jobs.gc(self.opened.repo, progress=relay)
        logging.getLogger("recovery_ui").info(
            "gc: freed %d chunks, %d bytes", result.freed, result.freed_bytes
        )
        self.app.call_from_thread(self._space_freed, result)

    def _space_freed(self, result: GcResult) -> None:
        self.query_one("#gc-go", Button).disabled = False
        lines = [
            _("Freed {size} on the drive.").format(size=text.decimal_size(result.freed_bytes))
            if result.freed_bytes
            else _("Nothing to free: every stored piece belongs to a backup.")
        ]
        if result.waiting_batches:
            lines.append(_("More space is freed after the work running now has finished."))
        self.query_one("#gc-result", Static).update("\n".join(lines))
        self.hourglass.repository_changed.publish(self.hourglass)

    def on_progress_relay_updated(self, message: ProgressRelay.Updated) -> None:
        event = message.relay.take()
        if event is None:
            return
        if message.relay.name != "gc":
            self.query_one("#verify-progress", ProgressPanel).show(event)
            return
        panel = self.query_one("#gc-progress", ProgressPanel)
        if event.phase != self.gc_phase and event.phase in GC_PHASES:
            self.gc_phase = event.phase
            panel.set_phase(_(GC_PHASES[event.phase]), counts_bytes=False)
        panel.show(event)

    # --- passphrase and recovery key --------------------------------------------------------

    def _change_key(self) -> None:
        first = self.query_one("#key1", Input).value
        second = self.query_one("#key2", Input).value
        if not first:
            return
        if first != second:
            self.query_one("#key2", Input).value = ""
            self.hourglass.report_error(
                UsageError(_("The two passphrases are not the same."), _("Type them again."))
            )
            return
        judge_new_passphrase(self, first, lambda: self.change_key(first))

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def change_key(self, secret: str) -> None:

        assert self.opened is not None
        if not self.opened.repo.encrypted:
            raise UsageError(_("This repository is not encrypted: it has no passphrase."))
        slot = self.opened.repo.change_key(secret)
        logging.getLogger("recovery_ui").info("passphrase changed (new key slot %s)", slot)
        self.app.call_from_thread(self._key_changed)

    def _key_changed(self) -> None:
        for field in ("#key1", "#key2"):
            self.query_one(field, Input).value = ""
        self.query_one("#key-result", Static).update(
            _("The passphrase is changed. Use the new one from now on.")
        )

    def _show_slots(self) -> None:
        if self.opened is None:
            return
        if not self.opened.repo.encrypted:
            self.query_one("#slots", Static).update(_("This repository is not encrypted."))
            return
        slots = self.opened.repo.key_slots()
        recovery = sum(1 for s in slots if s["kind"] == "recovery")
        self.query_one("#slots", Static).update(
            _("Passphrases: {passphrases}; recovery keys: {recovery}.").format(
                passphrases=len(slots) - recovery, recovery=recovery
            )
        )

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def add_recovery_key(self) -> None:

        assert self.opened is not None
        key = new_recovery_key()
        slot = self.opened.repo.add_key(key, kind="recovery")
        logging.getLogger("recovery_ui").info("recovery key added (key slot %s)", slot)
        self.app.call_from_thread(self._recovery_added, key)

    def _recovery_added(self, key: str) -> None:

        self._show_slots()
        self.app.push_screen(RecoveryKeyDialog(key))

    def work_failed(self, worker: Worker[object], error: BaseException) -> None:
        if worker.name == "verify":
            self.query_one("#verify-go", Button).disabled = False
        elif worker.name == "free_space":
            self.query_one("#gc-go", Button).disabled = False
            self.query_one("#gc-result", Static).update(
                _("Freeing space stopped: {reason}").format(reason=failure_reason(error))
            )
        elif worker.name == "forget":
            self.query_one("#forget-summary", Static).update(
                _("Forgetting stopped: {reason}").format(reason=failure_reason(error))
            )
