"""Snapshots in time: grouped by day, newest first, one line each."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets.option_list import Option

from recovery_ui import text
from recovery_ui.widgets.controls import Options, option

if TYPE_CHECKING:
    from imaging.repository.records import Snapshot


class Timeline(Options):
    """Options are snapshot ids; day headings are disabled options."""

    DEFAULT_CSS = """
    Timeline { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, compact=True)
        self.snapshots: dict[str, Snapshot] = {}

    def show(self, snapshots: list[Snapshot]) -> None:
        self.snapshots = {s.id: s for s in snapshots}
        options: list[Option | None] = []
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
