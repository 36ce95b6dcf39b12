"""Controls drawn with the glyphs of the terminal in use (recovery_ui.console)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import widgets as textual_widgets
from textual.widgets import Checkbox
from textual.widgets.option_list import Option


def checkbox(label: str, value: bool = False, *, id: str | None = None) -> Checkbox:
    """A checkbox (its box is drawn with the terminal's glyphs: HourglassApp sets them)."""
    return Checkbox(label, value, id=id, compact=True)


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
