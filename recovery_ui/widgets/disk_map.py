"""A disk drawn as a bar whose pieces are its partitions, in proportion to their sizes,
each filled as far as its filesystem is used, with a legend naming each partition's
filesystem, label, size and use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.text import Text
from textual.widget import Widget

from recovery_ui import text
from recovery_ui.console import Glyphs, glyphs_of

if TYPE_CHECKING:
    from imaging.jobs.disks import Disk

# ANSI colours: every console has them, and the true-colour themes map them.
PALETTE = ("blue", "green", "magenta", "cyan", "yellow", "red")
LEGEND_GAP = "   "


def segments(disk: Disk, width: int) -> list[tuple[int, int, int]]:
    """(partition index, first column, columns) for each partition, in disk order; every
    partition gets at least one column and none overlaps the next."""
    result: list[tuple[int, int, int]] = []
    if width <= 0 or disk.size <= 0:
        return result
    ordered = [
        i
        for i in sorted(range(len(disk.partitions)), key=lambda i: disk.partitions[i].start)
        if disk.partitions[i].role != "extended"
    ]
    column = 0
    for position, index in enumerate(ordered):
        p = disk.partitions[index]
        remaining = len(ordered) - position - 1
        start = max(column, int(p.start * width / disk.size))
        start = min(start, max(column, width - remaining - 1))
        end = max(start + 1, int((p.start + p.size) * width / disk.size))
        end = min(end, width - remaining)
        if start >= width:
            break
        result.append((index, start, max(1, end - start)))
        column = start + max(1, end - start)
    return result


class DiskMap(Widget):
    DEFAULT_CSS = """
    DiskMap { height: auto; padding: 0 1; }
    """

    def __init__(self, disk: Disk) -> None:
        super().__init__()
        self.disk = disk

    def show(self, disk: Disk) -> None:
        """Draw ``disk`` instead (the same disk, read again)."""
        if disk != self.disk:
            self.disk = disk
            self.refresh(layout=True)

    def get_content_height(self, container: object, viewport: object, width: int) -> int:
        return len(self._lines(width, glyphs_of(self.app)))

    def render(self) -> Text:
        lines = self._lines(self.size.width, glyphs_of(self.app))
        return Text("\n").join(lines)

    def _lines(self, width: int, glyphs: Glyphs) -> list[Text]:
        width = max(10, width)
        disk = self.disk
        header = Text(no_wrap=True, overflow=glyphs.overflow)  # type: ignore[arg-type]
        header.append(disk.device, style="bold")
        header.append("  " + text.disk_title(disk))
        marks = text.disk_marks(disk)
        if marks:
            header.append("  [" + ", ".join(marks) + "]", style="italic")
        header.truncate(width, overflow=glyphs.overflow)  # type: ignore[arg-type]
        return [header, self._bar(width, glyphs), *self._legend(width, glyphs)]

    def _bar(self, width: int, glyphs: Glyphs) -> Text:
        """The partitions side by side: the used part filled, the label written over it."""
        cells: list[tuple[str, str]] = [(glyphs.free, "dim")] * width
        for index, start, columns in segments(self.disk, width):
            p = self.disk.partitions[index]
            colour = PALETTE[index % len(PALETTE)]
            fraction = p.used / p.size if p.used is not None and p.size else 0.0
            used = min(columns, round(columns * fraction))
            if p.used:
                used = max(1, used)
            label = f"{p.number} {p.fstype} {text.partition_name(p)}".strip()
            if cell_len(label) > columns or not label.isascii():
                label = str(p.number)[:columns]
            for offset in range(columns):
                char = label[offset] if offset < len(label) else None
                if offset < used:
                    cells[start + offset] = (char or " ", f"bold bright_white on {colour}")
                else:
                    cells[start + offset] = (char or glyphs.free, f"bold {colour}")
        bar = Text(no_wrap=True)
        for char, style in cells:
            bar.append(char, style=style)
        return bar

    def _legend(self, width: int, glyphs: Glyphs) -> list[Text]:
        """One item per partition, as many on a line as fit."""
        lines: list[Text] = []
        line = Text(no_wrap=True, overflow=glyphs.overflow)  # type: ignore[arg-type]
        for index, p in enumerate(self.disk.partitions):
            item = text.partition_item(p)
            needed = 2 + cell_len(item)
            if line.cell_len and line.cell_len + len(LEGEND_GAP) + needed > width:
                lines.append(line)
                line = Text(no_wrap=True, overflow=glyphs.overflow)  # type: ignore[arg-type]
            if line.cell_len:
                line.append(LEGEND_GAP)
            line.append(glyphs.used, style=PALETTE[index % len(PALETTE)])
            line.append(" " + item)
        if line.cell_len:
            lines.append(line)
        for each in lines:
            each.truncate(width, overflow=glyphs.overflow)  # type: ignore[arg-type]
        return lines
