"""Controls drawn with the glyphs of the terminal in use (recovery_ui.console)."""

from __future__ import annotations

from typing import Any, TypeVar

from rich.segment import Segment
from rich.text import Text
from textual import events
from textual import widgets as textual_widgets
from textual.content import Content
from textual.geometry import Size
from textual.strip import Strip
from textual.visual import VisualType
from textual.widget import Widget
from textual.widgets import Checkbox, OptionList, SelectionList
from textual.widgets._toggle_button import ToggleButton
from textual.widgets.option_list import Option, OptionDoesNotExist

from recovery_ui.console import glyphs_of

OFF = " "  # what an unticked box holds: on and off differ without colour (serial consoles)
# Where the terminal may show no colour (recovery_ui.console.Glyphs.focus), every list row
# and checkbox starts with this many columns for the focus mark (app.tcss pads the rows).
MARK = 2
T = TypeVar("T")


def _focus_mark(widget: Widget) -> str:
    """The mark of the focused row, or "" where colour shows focus (the full terminal)."""
    return glyphs_of(widget.app).focus


def _marked_row(widget: OptionList, y: int, strip: Strip) -> Strip:
    """``strip``, row ``y`` of ``widget``, with the focus mark in its first 2 columns when it
    is the first line of the highlighted option of the focused list."""
    mark = _focus_mark(widget)
    if not mark or strip.cell_length < MARK:
        return strip
    try:
        index, line = widget._lines[widget.scroll_offset.y + y]
    except IndexError:
        return strip
    if not (widget.has_focus and index == widget.highlighted and line == 0):
        return strip
    pad = list(strip.crop(0, 1))
    style = pad[0].style if pad else None
    return Strip.join([Strip([Segment(mark.ljust(MARK), style)], MARK), strip.crop(MARK)])


class Check(Checkbox):
    """A checkbox whose box is empty when off, not a dimmed mark (see :data:`OFF`), with
    the focus mark before it where colour may not show (see :func:`_focus_mark`)."""

    @property
    def _button(self) -> Content:
        self.BUTTON_INNER = ToggleButton.BUTTON_INNER if self.value else OFF
        return super()._button

    def render(self) -> Content:
        content = super().render()
        mark = _focus_mark(self)
        if not mark:
            return content
        return Content.assemble((mark if self.has_focus else "").ljust(MARK), content)

    def get_content_width(self, container: Size, viewport: Size) -> int:
        width = super().get_content_width(container, viewport)
        return width + MARK if _focus_mark(self) else width


class Options(OptionList):
    """An option list whose focused row is marked where colour may not show it, and which
    tells a row chosen with Enter (go on) from one clicked (choose it, stay)."""

    by_mouse = False  # whether the last option selected was clicked
    _clicking = False

    async def _on_click(self, event: events.Click) -> None:
        # Textual calls OptionList's own handler after this one (it selects the option).
        index = event.style.meta.get("option")
        self._clicking = index is not None and not self.get_option_at_index(index).disabled

    def action_select(self) -> None:
        self.by_mouse, self._clicking = self._clicking, False
        super().action_select()

    def render_line(self, y: int) -> Strip:
        return _marked_row(self, y, super().render_line(y))


class Choices(SelectionList[T]):
    """A selection list whose unselected boxes are empty (see :class:`Check`), and whose
    focused row is marked before its box where colour may not show it."""

    def _on_focus(self, event: events.Focus) -> None:
        # Textual calls the Widget's own handler too (each class's, along the MRO).
        if self.highlighted is None and self.option_count:
            self.highlighted = 0  # focused, the cursor is shown: Space ticks what it is on

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
            strip = Strip(segments, strip.cell_length)
        if not _focus_mark(self):
            return strip
        # The row's padding (the mark's columns) moves before the box: "> [X] label".
        box = self._get_left_gutter_width()
        strip = Strip.join(
            [strip.crop(box, box + MARK), strip.crop(0, box), strip.crop(box + MARK)]
        )
        return _marked_row(self, y, strip)


class Secret(textual_widgets.Input):
    """An input whose password mask is the terminal's (``*`` on the consoles, where Textual's
    ``•`` may not be drawn and the field would look empty)."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        mask = glyphs_of(self.app).mask
        if not self.password or mask == "•":
            return strip
        segments = [Segment(s.text.replace("•", mask), s.style, s.control) for s in strip]
        return Strip(segments, strip.cell_length)


class Field(Secret):
    """An input whose Enter moves on to the next field at once (HourglassApp's priority
    binding does it, before the keys typed after Enter are handed out: a busy app, as on a
    slow serial console, reads what was typed meanwhile in one go, and a Submitted handler
    moving the focus came too late for those keys). Its Submitted message still comes."""


class Button(textual_widgets.Button):
    """A button drawn between the focus brackets when focused, where colour may not show it
    (its width already holds one column either side of the label)."""

    def render(self) -> VisualType:
        label = super().render()
        if not (_focus_mark(self) and self.has_focus and isinstance(label, Content)):
            return label  # centred in its width, as the brackets' columns are blank
        left, right = glyphs_of(self.app).focus_button
        return Content.assemble(left, label, right)


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
