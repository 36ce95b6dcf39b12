"""Controls drawn with the glyphs of the terminal in use (recovery_ui.console)."""

from __future__ import annotations

from typing import Any, TypeVar

from rich.segment import Segment
from rich.text import Text
from textual import widgets as textual_widgets
from textual.content import Content
from textual.strip import Strip
from textual.widgets import Checkbox, SelectionList
from textual.widgets._toggle_button import ToggleButton
from textual.widgets.option_list import Option, OptionDoesNotExist

OFF = " "  # what an unticked box holds: on and off differ without colour (serial consoles)
T = TypeVar("T")


class Check(Checkbox):
    """A checkbox whose box is empty when off, not a dimmed mark (see :data:`OFF`)."""

    @property
    def _button(self) -> Content:
        self.BUTTON_INNER = ToggleButton.BUTTON_INNER if self.value else OFF
        return super()._button


class Choices(SelectionList[T]):
    """A selection list whose unselected boxes are empty (see :class:`Check`)."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        try:
            selection = self.get_option_at_index(self.scroll_offset.y + y)
        except OptionDoesNotExist:
            return strip
        segments = list(strip)
        if (
            selection.value not in self._selected
            and len(segments) > 1
            and segments[1].text == ToggleButton.BUTTON_INNER
        ):
            segments[1] = Segment(OFF, segments[1].style)
            return Strip(segments, strip.cell_length)
        return strip


def checkbox(label: str, value: bool = False, *, id: str | None = None) -> Checkbox:
    """A checkbox (its box is drawn with the terminal's glyphs: HourglassApp sets them)."""
    return Check(label, value, id=id, compact=True)


class Label(textual_widgets.Label):
    """A label that shows its text as it is: paths, labels and engine messages may hold
    square brackets, which Textual would take for markup."""

    def __init__(self, content: str = "", *, markup: bool = False, **kwargs: Any) -> None:
        super().__init__(content, markup=markup, **kwargs)


class Static(textual_widgets.Static):
    """A static text shown as it is (see :class:`Label`)."""

    def __init__(self, content: str = "", *, markup: bool = False, **kwargs: Any) -> None:
        super().__init__(content, markup=markup, **kwargs)


def option(prompt: str, id: str | None = None, *, disabled: bool = False) -> Option:
    """An option list entry shown as it is (see :class:`Label`)."""
    return Option(Text(prompt), id=id, disabled=disabled)
