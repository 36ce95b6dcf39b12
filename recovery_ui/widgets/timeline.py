"""Snapshots in time: grouped by day, newest first, one line each; the hosts whose file
journal the repository holds above them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets.option_list import Option

from recovery_ui import text
from recovery_ui.i18n import _, ngettext
from recovery_ui.widgets.controls import Options, option

if TYPE_CHECKING:
    from imaging.jobs.files import JournalHost
    from imaging.repository.records import Snapshot


class Timeline(Options):
    """Options are snapshot ids, or a journal's source id (``journal:HOST``); headings are
    disabled options."""

    DEFAULT_CSS = """
    Timeline { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, compact=True)
        self.snapshots: dict[str, Snapshot] = {}
        self.journals: dict[str, JournalHost] = {}

    def show(self, snapshots: list[Snapshot], journals: list[JournalHost] | None = None) -> None:
        self.snapshots = {s.id: s for s in snapshots}
        self.journals = {j.source_id: j for j in journals or ()}
        options: list[Option | None] = []
        if self.journals:
            options.append(option(_("Continuous file history (any second)"), disabled=True))
        for journal in self.journals.values():
            line = "  " + _("File history of {host}, newest {when}").format(
                host=journal.host, when=text.when(text.moment(journal.newest_ns))
            )
            if journal.gaps:
                line += "  " + ngettext(
                    "({count} gap)", "({count} gaps)", len(journal.gaps)
                ).format(count=len(journal.gaps))
            options.append(option(line, id=journal.source_id))
        day = ""
        for snapshot in sorted(snapshots, key=lambda s: s.order, reverse=True):
            stamp = text.when(snapshot.time)
            if stamp[:10] != day:
                day = stamp[:10]
                options.append(option(f"{day}", disabled=True))
            line = f"  {stamp[11:]}  {text.snapshot_source(snapshot, serial=False)}  "
            line += text.decimal_size(snapshot.size)
            options.append(option(line, id=snapshot.id))
        self.set_options(options)
        self.select_first()

    def select_first(self) -> None:
        for index in range(self.option_count):
            if not self.get_option_at_index(index).disabled:
                self.highlighted = index
                return

    def choose(self, snapshot_id: str) -> None:
        self.highlighted = self.get_option_index(snapshot_id)

    @property
    def chosen(self) -> Snapshot | None:
        if self.highlighted is None:
            return None
        option = self.get_option_at_index(self.highlighted)
        return self.snapshots.get(option.id or "")

    @property
    def chosen_journal(self) -> JournalHost | None:
        if self.highlighted is None:
            return None
        return self.journals.get(self.get_option_at_index(self.highlighted).id or "")
