"""Settings: the language and the colours, saved on the backup drive when there is one."""

from __future__ import annotations

import logging
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import OptionList

from imaging.appliance import settings
from recovery_ui import i18n
from recovery_ui.i18n import N_, _
from recovery_ui.screens.base import BaseScreen
from recovery_ui.widgets.controls import Button, Label, Options, Static, option

THEMES = (("dark", N_("Dark")), ("light", N_("Light")))


class SettingsScreen(BaseScreen[None]):
    TITLE_TEXT = N_("Settings")
    REBUILDABLE: ClassVar[bool] = True
    DEFAULT_CSS = """
    SettingsScreen OptionList { height: auto; width: 40; margin: 0 1; }
    SettingsScreen #saved { padding: 0 1; height: auto; }
    """

    def compose_body(self) -> ComposeResult:
        app = self.hourglass
        with Vertical():
            yield Label(_("Language"), classes="section first")
            yield Options(
                *[
                    option(i18n.language_name(code, app.terminal.cjk), id=code)
                    for code in i18n.LANGUAGES
                ],
                id="language",
                compact=True,
            )
            if not app.terminal.cjk:
                yield Static(
                    _(
                        "This screen cannot show Chinese characters, so the app is shown in "
                        "English here. On the appliance's main screen it is shown in Chinese."
                    ),
                    classes="warning",
                )
            yield Label(_("Colours"), classes="section")
            yield Options(
                *[option(_(label), id=code) for code, label in THEMES], id="theme", compact=True
            )
            yield Static(self._where(), id="where", classes="note")
            with Horizontal(classes="buttons"):
                yield Button(_("Save"), id="save", compact=True, variant="primary")
            yield Static("", id="saved", markup=False)

    def _where(self) -> str:
        drive = self.hourglass.settings_drive
        if self.hourglass.opened is not None or self.hourglass.found or drive:
            return _("The settings are saved on the backup drive and used at the next start.")
        return _(
            "No backup drive is plugged in: the settings last until the computer is switched off."
        )

    def on_mount(self) -> None:
        app = self.hourglass
        language = self.query_one("#language", OptionList)
        language.highlighted = list(i18n.LANGUAGES).index(
            app.wanted_language if app.wanted_language in i18n.LANGUAGES else i18n.ENGLISH
        )
        theme = self.query_one("#theme", OptionList)
        theme.highlighted = 1 if app.theme_choice == "light" else 0
        language.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option_list.id == "language":
            self.hourglass.set_language(event.option.id or i18n.ENGLISH)
        elif event.option_list.id == "theme":
            self.hourglass.set_theme_choice(event.option.id or "dark")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.save(self.hourglass.current_settings())

    @work(thread=True, exclusive=True, exit_on_error=False, group="settings")
    def save(self, chosen: object) -> None:

        assert isinstance(chosen, settings.Settings)
        drive = self.hourglass.writable_drive()
        if not drive:
            self.app.call_from_thread(
                self.query_one("#saved", Static).update,
                _("No backup drive: the settings apply until the computer is switched off."),
            )
            return
        path = settings.save(drive, chosen)
        logging.getLogger("recovery_ui").info("settings saved to %s", path)
        self.app.call_from_thread(
            self.query_one("#saved", Static).update,
            _("Saved on the backup drive ({path}).").format(path=path),
        )
