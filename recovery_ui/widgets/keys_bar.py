"""The bottom line: the keys that work now, described in the current language."""

from __future__ import annotations

from rich.text import Text
from textual.screen import Screen

from recovery_ui.console import glyphs_of
from recovery_ui.i18n import _
from recovery_ui.widgets.controls import Static


class KeysBar(Static):
    """Like Textual's Footer, but each description goes through gettext when drawn (the
    bindings are declared once, with the English text as the message id)."""

    DEFAULT_CSS = """
    KeysBar { dock: bottom; height: 1; background: $panel; color: $foreground; }
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._show()

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, _screen: Screen[object]) -> None:
        self._show()

    def _show(self) -> None:
        line = Text(no_wrap=True, overflow=glyphs_of(self.app).overflow)  # type: ignore[arg-type]
        seen: set[str] = set()
        for active in self.screen.active_bindings.values():
            binding = active.binding
            if not binding.show or binding.description in seen:
                continue
            seen.add(binding.description)
            key = binding.key_display or self.app.get_key_display(binding)
            line.append(f" {key} ", style="bold reverse" if active.enabled else "dim reverse")
            line.append(f" {_(binding.description)} ", style="" if active.enabled else "dim")
        self.update(line)
