"""Progress of long work: the bar, the partition being read or written, the speed, the time
left, new and deduplicated bytes, and the time taken so far."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Grid, Vertical

from recovery_ui import text
from recovery_ui.i18n import _, ngettext
from recovery_ui.widgets.controls import Label
from recovery_ui.widgets.meter import Meter

if TYPE_CHECKING:
    from imaging.progress import Progress

FIELDS = ("item", "done", "rate", "eta", "new", "dedup", "elapsed")


class ProgressPanel(Vertical):
    DEFAULT_CSS = """
    ProgressPanel { height: auto; padding: 0 1; }
    ProgressPanel > #phase { text-style: bold; }
    ProgressPanel Grid { grid-size: 4; grid-columns: auto 1fr auto 1fr; grid-gutter: 0 1;
                         height: auto; margin-top: 1; }
    ProgressPanel Grid Label.name { color: $text-muted; }
    """

    def __init__(self, *, dedup: bool = True, item: str = "", id: str | None = None) -> None:
        super().__init__(id=id)
        self.dedup = dedup
        self.item_label = item
        self.counts_bytes = True

    def compose(self) -> ComposeResult:
        yield Label(_("Starting..."), id="phase")
        yield Meter()
        names = {
            "item": self.item_label or _("Partition"),
            "done": _("Done"),
            "rate": _("Speed"),
            "eta": _("Time left"),
            "new": _("New data"),
            "dedup": _("Already stored"),
            "elapsed": _("Time taken"),
        }
        with Grid():
            for field in FIELDS:
                if field in ("new", "dedup") and not self.dedup:
                    continue
                yield Label(names[field], classes="name")
                yield Label("-", id=f"value-{field}")

    def set_phase(self, phase: str, *, counts_bytes: bool = True) -> None:
        """A new phase: ``counts_bytes`` False when its events count items (chunks, files)."""
        self.counts_bytes = counts_bytes
        self.query_one("#phase", Label).update(phase)
        self.query_one(Meter).fraction = 0.0

    def show(self, event: Progress) -> None:
        self.query_one(Meter).fraction = event.fraction
        done = (
            f"{text.decimal_size(event.done)} / {text.decimal_size(event.total)}"
            if self.counts_bytes
            # The phases that count items count the repository's stored pieces (chunks).
            else ngettext(
                "{done} of {total} stored piece", "{done} of {total} stored pieces", event.total
            ).format(done=event.done, total=event.total)
        )
        values = {
            "item": text.image_name(event.item) if event.item else "-",
            "done": done,
            "rate": text.rate(event.rate) if self.counts_bytes else "-",
            "eta": text.duration(event.eta if not event.finished else 0),
            "new": text.decimal_size(event.new_bytes),
            "dedup": text.decimal_size(event.dedup_bytes),
            "elapsed": text.duration(event.elapsed),
        }
        for field, value in values.items():
            for label in self.query(f"#value-{field}").results(Label):
                label.update(value)
