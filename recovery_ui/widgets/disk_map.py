"""A disk drawn as a bar whose pieces are its partitions, in proportion to their sizes,
each filled as far as its filesystem is used, with a legend line per partition."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.widget import Widget

from recovery_ui import text
from recovery_ui.console import glyphs_of

if TYPE_CHECKING:
    from imaging.disks.model import Disk

# ANSI colours: every console has them, and the true-colour themes map them.
PALETTE = ("blue", "green", "magenta", "cyan", "yellow", "red")


def segments(disk: Disk, width: int) -> list[tuple[int, int, int]]:
    """(partition index, first column, columns) for each partition, in disk order; every
    partition gets at least one column and none overlaps the next."""
    result: list[tuple[int, int, int]] = []
    if width <= 0 or disk.size <= 0:
        return result
    ordered = sorted(range(len(disk.partitions)), key=lambda i: disk.partitions[i].start)
    column = 0
    for position, index in enumerate(ordered):
        p = disk.partitions[index]
        if p.role == "extended":
            continue
        start = max(column, int(p.start * width / disk.size))
        end = int((p.start + p.size) * width / disk.size)
        remaining = len(ordered) - position - 1
        end = max(end, start + 1)
        end = min(end, width - remaining) if width - remaining > start else start + 1
        if start >= width:
            break
        result.append((index, start, min(end, width) - start))
        column = min(end, width)
    return result


class DiskMap(Widget):
    DEFAULT_CSS = """
    DiskMap { height: auto; padding: 0 1; }
    """

    def __init__(self, disk: Disk, *, legend: bool = True) -> None:
        super().__init__()
        self.disk = disk
        self.legend = legend

    def get_content_height(self, container: object, viewport: object, width: int) -> int:
        return 2 + (len(self.disk.partitions) if self.legend else 0)

    def render(self) -> Text:
        glyphs = glyphs_of(self.app)
        disk = self.disk
        width = max(10, self.size.width)
        lines = Text(no_wrap=True, overflow="ellipsis")
        lines.append(f"{disk.device}  ", style="bold")
        lines.append(text.disk_title(disk))
        marks = text.disk_marks(disk)
        if marks:
            lines.append("  [" + ", ".join(marks) + "]", style="italic")
        lines.append("\n")
        bar = [(glyphs.free, "dim")] * width
        for index, start, columns in segments(disk, width):
            p = disk.partitions[index]
            colour = PALETTE[index % len(PALETTE)]
            fraction = (p.used / p.size) if p.used is not None and p.size else 0.0
            used_columns = min(columns, round(columns * fraction))
            if p.used is not None and p.used > 0:
                used_columns = max(1, used_columns)
            label = f"{p.number} {p.fstype or '?'} {text.partition_name(p)}".strip()
            label = label if len(label) <= columns else str(p.number)[:columns]
            for offset in range(columns):
                char = label[offset] if offset < len(label) else " "
                if offset < used_columns:
                    bar[start + offset] = (char, f"bold bright_white on {colour}")
                else:
                    fill = char if offset < len(label) else glyphs.free
                    bar[start + offset] = (fill, f"{colour}")
        for char, style in bar:
            lines.append(char, style=style)
        if self.legend:
            for index, p in enumerate(disk.partitions):
                lines.append("\n")
                lines.append(f" {glyphs.used} ", style=PALETTE[index % len(PALETTE)])
                lines.append(text.partition_line(p))
        return lines
