"""Vendor settings: ``image/vendor.toml`` (the documented defaults) or a file of a vendor's.

A vendor file only needs the keys it changes; every other key keeps its default. A wrong
file is refused with its line and key, before anything is built.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from build.errors import VendorError
from imaging.appliance.vendor import VendorSettings

LANGUAGES = ("en_US", "zh_CN")
UNATTENDED_ACTIONS = ("none", "backup", "restore", "verify")
AFTER_ACTIONS = ("poweroff", "reboot", "stay")
COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
SLUG = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


@dataclass(frozen=True)
class Vendor(VendorSettings):
    """Everything a vendor can change; the defaults are Hourglass's own. What the appliance
    reads back at run time is :class:`imaging.appliance.vendor.VendorSettings` (one set of
    defaults); the build adds the packages, files and PXE address."""

    packages: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)
    pxe_url: str = "http://192.168.100.1/hourglass"

    def extra_files(self) -> list[tuple[Path, str]]:
        """(source on the build host, destination in the root) for every extra file."""
        base = self.path.parent if self.path else Path(".")
        return [(base / src, dest) for dest, src in sorted(self.files.items())]


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("must be a string")
    return value


def _choice(options: tuple[str, ...]) -> Any:
    def check(value: object) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return str(value)

    return check


def _pattern(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: object) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            raise ValueError(f"must be {what}")
        return value

    return check


def _packages(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("must be a list of Debian package names")
    for name in value:
        if not PACKAGE.match(name):
            raise ValueError(f"{name!r} is not a Debian package name")
    return tuple(value)


def _url(value: object) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
        raise ValueError("must be an http:// or https:// address")
    return value.rstrip("/")


# table -> key -> (Vendor field, checker)
SCHEMA: dict[str, dict[str, tuple[str, Any]]] = {
    "product": {
        "name": ("name", _string),
        "slug": ("slug", _pattern(SLUG, "lower-case letters, digits and '-' (file names)")),
    },
    "colours": {
        "primary": ("primary", _pattern(COLOUR, 'a colour like "#2e7dd7"')),
        "accent": ("accent", _pattern(COLOUR, 'a colour like "#f2a900"')),
        "background": ("background", _pattern(COLOUR, 'a colour like "#10151c"')),
    },
    "defaults": {
        "language": ("language", _choice(LANGUAGES)),
        "repository": ("repository", _string),
    },
    "unattended": {
        "action": ("unattended_action", _choice(UNATTENDED_ACTIONS)),
        "source": ("unattended_source", _string),
        "after": ("unattended_after", _choice(AFTER_ACTIONS)),
    },
    "packages": {"extra": ("packages", _packages)},
    "pxe": {"url": ("pxe_url", _url)},
}


def key_line(text: str, table: str, key: str | None) -> int | None:
    """The line (1-based) where ``[table]`` sets ``key`` (or the table header), if found."""
    current = ""
    header_line = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = re.match(r"^\[\s*([^\]]+?)\s*\]", line)
        if header:
            current = header.group(1).strip().strip('"')
            if current == table:
                header_line = number
            continue
        if current == table and key is not None:
            found = re.match(r'^"?([^"=]+?)"?\s*=', line)
            if found and found.group(1).strip() == key:
                return number
    return header_line


def load_vendor(path: Path | None) -> Vendor:
    """Parse and check a vendor file; ``None`` gives the defaults."""
    if path is None:
        return Vendor()
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise VendorError(name, None, None, f"cannot be read: {e.strerror}") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        match = re.search(r"line (\d+)", str(e))
        line = int(match.group(1)) if match else None
        raise VendorError(name, line, None, f"is not valid TOML: {e}") from e

    values: dict[str, Any] = {"path": path.resolve()}
    for table, entries in data.items():
        if table == "files":
            values["files"] = _files(name, text, path.parent, entries)
            continue
        if table not in SCHEMA:
            known = ", ".join(sorted([*SCHEMA, "files"]))
            raise VendorError(
                name, key_line(text, table, None), table, f"unknown table; known: {known}"
            )
        if not isinstance(entries, dict):
            raise VendorError(name, key_line(text, table, None), table, "must be a [table]")
        for key, value in entries.items():
            if key not in SCHEMA[table]:
                known = ", ".join(SCHEMA[table])
                raise VendorError(
                    name,
                    key_line(text, table, key),
                    f"{table}.{key}",
                    f"unknown key; known: {known}",
                )
            attribute, check = SCHEMA[table][key]
            try:
                values[attribute] = check(value)
            except (TypeError, ValueError) as e:
                raise VendorError(name, key_line(text, table, key), f"{table}.{key}", str(e)) from e
    return Vendor(**values)


def _files(name: str, text: str, base: Path, entries: object) -> dict[str, str]:
    if not isinstance(entries, dict):
        raise VendorError(name, key_line(text, "files", None), "files", "must be a [table]")
    files: dict[str, str] = {}
    for dest, src in entries.items():
        line = key_line(text, "files", dest)
        if not dest.startswith("/") or ".." in Path(dest).parts:
            raise VendorError(
                name, line, f"files.{dest}", "the destination must be an absolute path"
            )
        if not isinstance(src, str):
            raise VendorError(name, line, f"files.{dest}", "the source must be a string")
        if not (base / src).is_file():
            raise VendorError(name, line, f"files.{dest}", f"{base / src} is not a file")
        files[dest] = src
    return files


def render_vendor(vendor: Vendor) -> str:
    """The settings the app reads on the appliance (/etc/hourglass/vendor.toml)."""

    def q(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "\n".join(
        [
            "# Written by the appliance build from the vendor file; read by the app.",
            "[product]",
            f"name = {q(vendor.name)}",
            f"slug = {q(vendor.slug)}",
            "[colours]",
            f"primary = {q(vendor.primary)}",
            f"accent = {q(vendor.accent)}",
            f"background = {q(vendor.background)}",
            "[defaults]",
            f"language = {q(vendor.language)}",
            f"repository = {q(vendor.repository)}",
            "[unattended]",
            f"action = {q(vendor.unattended_action)}",
            f"source = {q(vendor.unattended_source)}",
            f"after = {q(vendor.unattended_after)}",
            "",
        ]
    )
