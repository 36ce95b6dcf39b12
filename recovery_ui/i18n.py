"""Translations (GNU gettext, domain ``hourglass``).

Every string the app shows goes through :func:`_` (or :func:`ngettext` when it depends on a
count; :func:`N_` marks a string to translate later, at display time). The catalogs are in
``recovery_ui/locale/<language>/LC_MESSAGES/hourglass.po``, compiled to ``.mo`` beside it
(``make i18n``). Messages that come from the engine (errors and their hints) stay in English.
"""

from __future__ import annotations

import gettext
import os
from collections.abc import Mapping
from pathlib import Path

DOMAIN = "hourglass"
LOCALE_DIR = Path(__file__).parent / "locale"
ENGLISH = "en"
CHINESE = "zh_CN"
# Language code -> its name in that language (what the Settings screen lists).
LANGUAGES = {ENGLISH: "English", CHINESE: "简体中文"}
# Languages whose script the Linux console cannot draw, and how to name them there.
NEEDS_CJK = {CHINESE}
PLAIN_NAMES = {CHINESE: "Chinese (Simplified)"}


def language_name(code: str, cjk: bool) -> str:
    """The language's own name, or a name in Latin letters where its script cannot be drawn."""
    if code in NEEDS_CJK and not cjk:
        return PLAIN_NAMES[code]
    return LANGUAGES[code]


class _State:
    """The language in use (one per process: the app is the only user)."""

    translation: gettext.NullTranslations = gettext.NullTranslations()
    code = ENGLISH


def _(message: str) -> str:
    """``message`` in the current language."""
    return _State.translation.gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return _State.translation.ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Mark ``message`` for translation without translating it now."""
    return message


def current() -> str:
    return _State.code


def set_language(code: str) -> None:
    """Use ``code`` (a key of :data:`LANGUAGES`) from now on."""
    if code not in LANGUAGES:
        code = ENGLISH
    if code == ENGLISH:
        _State.translation = gettext.NullTranslations()
    else:
        _State.translation = gettext.translation(DOMAIN, LOCALE_DIR, languages=[code])
    _State.code = code


def from_locale(value: str) -> str | None:
    """The language of a locale name (``zh_CN.UTF-8``, ``en_US``, ``zh_CN:en``); None for
    one that names no language (``C``, ``POSIX``, empty)."""
    first = value.partition(":")[0].partition(".")[0]
    if first.startswith("zh"):
        return CHINESE
    if first and first not in ("C", "POSIX"):
        return ENGLISH
    return None


def from_environment(environ: Mapping[str, str] | None = None) -> str:
    """The language the system asks for (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``)."""
    env = os.environ if environ is None else environ
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        language = from_locale(env.get(name, ""))
        if language is not None:
            return language
    return ENGLISH


def choose(wanted: str, cjk: bool) -> str:
    """The language to show: ``wanted`` unless the terminal cannot draw its script."""
    if wanted not in LANGUAGES:
        return ENGLISH
    if wanted in NEEDS_CJK and not cjk:
        return ENGLISH
    return wanted
