"""Every string of the app goes through gettext and the zh_CN catalog translates it all."""

from __future__ import annotations

import ast
import gettext
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import recovery_ui
from recovery_ui import i18n

SOURCES = Path(recovery_ui.__file__).parent
CATALOG = SOURCES / "locale" / "zh_CN" / "LC_MESSAGES"
MARKERS = {"_": 1, "N_": 1, "ngettext": 2}
FIELD = re.compile(r"\{([a-z_]*)(?::[^}]*)?\}")


def messages() -> dict[str, str | None]:
    """msgid -> msgid_plural (None for a singular) of every marked string in the sources."""
    found: dict[str, str | None] = {}
    for path in sorted(SOURCES.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            wanted = MARKERS.get(node.func.id)
            if wanted is None:
                continue
            args = node.args[:wanted]
            where = f"{path}:{node.lineno}: {node.func.id}()"
            # A built string can never be in the catalog.
            assert not any(isinstance(a, ast.JoinedStr | ast.BinOp) for a in args), where
            if not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args):
                assert node.func.id == "_", f"{where} marks a string: it must be a literal"
                continue  # _(name): a message id marked with N_() where it is defined
            values = [a.value for a in args]  # type: ignore[attr-defined]
            found[values[0]] = values[1] if wanted == 2 else None
    return found


def catalog() -> gettext.GNUTranslations:
    with open(CATALOG / "hourglass.mo", "rb") as f:
        return gettext.GNUTranslations(f)


def test_sources_mark_enough_strings() -> None:
    found = messages()
    assert len(found) > 300
    assert "Back up" in found and "Restore system" in found


def test_zh_cn_catalog_is_complete_and_keeps_the_fields() -> None:
    translations = catalog()
    missing, broken = [], []
    for msgid, plural in messages().items():
        if plural is None:
            text = translations._catalog.get(msgid)  # type: ignore[attr-defined]
        else:
            text = translations._catalog.get((msgid, 0))  # type: ignore[attr-defined]
        if not text:
            missing.append(msgid)
            continue
        # A translation names the same {fields}: str.format would fail otherwise.
        if set(FIELD.findall(text)) != set(FIELD.findall(msgid)):
            broken.append(f"{msgid!r} -> {text!r}")
    assert not missing, f"untranslated: {missing}"
    assert not broken, f"fields differ: {broken}"


def test_every_translation_differs_from_english() -> None:
    translations = catalog()
    same = [
        msgid
        for msgid, plural in messages().items()
        if plural is None
        and translations._catalog.get(msgid) == msgid  # type: ignore[attr-defined]
        and re.search("[a-z]{3}", msgid)
        and msgid not in ("USB",)
    ]
    assert not same


@pytest.mark.skipif(not shutil.which("msgfmt"), reason="needs msgfmt (Debian gettext)")
def test_compiled_catalog_is_up_to_date(tmp_path: Path) -> None:
    """The committed .mo is what msgfmt makes of the committed .po (run `make i18n`)."""
    out = tmp_path / "hourglass.mo"
    subprocess.run(["msgfmt", "--check", "-o", str(out), str(CATALOG / "hourglass.po")], check=True)
    with open(out, "rb") as f:
        fresh = gettext.GNUTranslations(f)
    assert fresh._catalog == catalog()._catalog  # type: ignore[attr-defined]


def test_language_choice() -> None:
    assert i18n.from_environment({"LANG": "zh_CN.UTF-8"}) == "zh_CN"
    assert i18n.from_environment({"LANGUAGE": "zh_TW:en", "LANG": "en_US.UTF-8"}) == "zh_CN"
    assert i18n.from_environment({"LANG": "de_DE.UTF-8"}) == "en"
    assert i18n.from_environment({"LANG": "C"}) == "en"
    assert i18n.choose("zh_CN", cjk=True) == "zh_CN"
    assert i18n.choose("zh_CN", cjk=False) == "en"
    assert i18n.choose("klingon", cjk=True) == "en"
    try:
        i18n.set_language("zh_CN")
        assert i18n._("Back up") == "备份"
        assert i18n.ngettext("{count} item", "{count} items", 5) == "{count} 项"
    finally:
        i18n.set_language("en")
    assert i18n._("Back up") == "Back up"


SHOWN = {"Label", "Static", "Button", "option", "checkbox", "Option", "Question", "ErrorDialog"}
NOT_WORDS = re.compile(r"^[\s\-\d.:/]*$")


def test_visible_strings_go_through_gettext() -> None:
    """A literal given to a widget that shows it is wrapped in _() (or is not words)."""
    unmarked = []
    for path in sorted(SOURCES.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            candidates = []
            if name in SHOWN:
                candidates += node.args[:1]
            candidates += [k.value for k in node.keywords if k.arg in ("placeholder", "label")]
            for arg in candidates:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    text = arg.value
                    if not NOT_WORDS.match(text) and text != "YYYY-MM-DD HH:MM:SS":
                        unmarked.append(f"{path.name}:{node.lineno}: {text!r}")
    assert not unmarked
