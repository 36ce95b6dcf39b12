"""The vendor's settings as the app and the engine read them (/etc/hourglass/vendor.toml):
the defaults without a file, a vendor's values, never a crash on a bad file, and exactly
what the build writes."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from imaging.appliance.vendor import (
    VENDOR_FILE_VARIABLE,
    RepositoryHint,
    VendorSettings,
    repository_hint,
    vendor_settings,
    write_within,
)

REPOSITORY = Path(__file__).resolve().parents[2]

ACME = """
[product]
name = "Acme Restore"
slug = "acme"
[colours]
primary = "#c0ffee"
[defaults]
language = "zh_CN"
repository = "label:ACME-DATA/backups"
[unattended]
action = "backup"
source = "/dev/nvme0n1"
after = "poweroff"
[packages]
extra = ["vim-tiny"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vendor.toml"
    path.write_text(text)
    return path


def test_without_a_file_the_defaults_apply(tmp_path: Path) -> None:
    settings = vendor_settings(tmp_path / "missing.toml")
    assert settings == VendorSettings()
    assert settings.path is None
    assert (settings.name, settings.language, settings.unattended_action) == (
        "Hourglass",
        "en_US",
        "none",
    )
    assert not settings.custom_colours


def test_a_vendor_file_sets_what_it_names(tmp_path: Path) -> None:
    path = write(tmp_path, ACME)
    settings = vendor_settings(path)
    assert settings.path == path
    assert (settings.name, settings.slug, settings.primary) == ("Acme Restore", "acme", "#c0ffee")
    assert settings.accent == VendorSettings().accent  # not named: the default
    assert settings.language == "zh_CN"
    assert settings.repository_hint() == RepositoryHint("label", "ACME-DATA", "/backups")
    assert (settings.unattended_action, settings.unattended_source) == ("backup", "/dev/nvme0n1")
    assert settings.unattended_after == "poweroff"
    assert settings.custom_colours


def test_the_environment_names_another_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VENDOR_FILE_VARIABLE, str(write(tmp_path, ACME)))
    assert vendor_settings().name == "Acme Restore"


@pytest.mark.parametrize(
    "text",
    [
        "[product\nname = 'broken",  # not TOML
        "\xff\xfe not text",
    ],
)
def test_a_file_that_cannot_be_read_gives_the_defaults(tmp_path: Path, text: str) -> None:
    path = tmp_path / "vendor.toml"
    path.write_bytes(text.encode("latin-1"))
    assert vendor_settings(path) == VendorSettings()
    assert vendor_settings(tmp_path) == VendorSettings()  # a directory


def test_a_wrong_value_keeps_that_keys_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[product]\nname = 42\n[colours]\nprimary = "blue"\naccent = "#123456"\n'
        '[unattended]\naction = "format"\nafter = "reboot"\n[defaults]\nlanguage = "de_DE"\n'
        'colours = "not a table"\n',
    )
    settings = vendor_settings(path)
    assert settings == VendorSettings(accent="#123456", unattended_after="reboot", path=path)


def test_the_documented_defaults_are_the_readers_defaults() -> None:
    documented = vendor_settings(REPOSITORY / "image" / "vendor.toml")
    assert replace(documented, path=None) == VendorSettings()
    assert not documented.custom_colours


def test_the_reader_reads_what_the_build_writes(tmp_path: Path) -> None:
    from build.vendor import load_vendor, render_vendor

    vendor = load_vendor(write(tmp_path, ACME))
    written = tmp_path / "written.toml"
    written.write_text(render_vendor(vendor))
    settings = vendor_settings(written)
    for field in dataclasses.fields(VendorSettings):
        if field.name != "path":
            assert getattr(settings, field.name) == getattr(vendor, field.name), field.name


@pytest.mark.parametrize(
    ("text", "hint", "location"),
    [
        (
            "label:HOURGLASS-DATA/hourglass",
            ("label", "HOURGLASS-DATA", "/hourglass"),
            "LABEL=HOURGLASS-DATA:/hourglass",
        ),
        ("label:BACKUP", ("label", "BACKUP", "/"), "LABEL=BACKUP:/"),
        ("/mnt/backup/hourglass/", ("path", "", "/mnt/backup/hourglass"), "/mnt/backup/hourglass"),
        (
            "smb://nas/backups/hourglass",
            ("smb", "nas", "backups/hourglass"),
            "smb://nas/backups/hourglass",
        ),
    ],
)
def test_repository_forms(text: str, hint: tuple[str, str, str], location: str) -> None:
    """The forms image/vendor.toml documents, and the same place as ``hourglass.repo=``."""
    parsed = repository_hint(text)
    assert parsed == RepositoryHint(*hint)
    assert parsed.as_location() == location


@pytest.mark.parametrize("text", ["", "  ", "label:", "smb://nas", "nfs://nas/x", "backups"])
def test_other_repository_texts_name_no_place(text: str) -> None:
    assert repository_hint(text) is None


def test_the_build_marks_a_vendor_action_for_the_unattended_unit(tmp_path: Path) -> None:
    """hourglass-unattended.service starts on /etc/hourglass/unattended-by-vendor."""
    from build.pipeline import UNATTENDED_MARKER, write_unattended_marker
    from build.vendor import Vendor

    unit = REPOSITORY / "image/overlay/etc/systemd/system/hourglass-unattended.service"
    assert f"ConditionPathExists=|/etc/hourglass/{UNATTENDED_MARKER}\n" in unit.read_text()
    write_unattended_marker(tmp_path, Vendor(unattended_action="restore"))
    assert (tmp_path / UNATTENDED_MARKER).read_text() == "restore\n"
    write_unattended_marker(tmp_path, Vendor())
    assert not (tmp_path / UNATTENDED_MARKER).exists()


def test_a_line_waits_for_a_full_port_to_drain() -> None:
    """The app on the serial port fills its buffer when it draws; a READY or RESULT line
    written then must still arrive whole (a pipe stands in for the port's buffer)."""
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    try:
        while True:  # fill the pipe the way a screen's worth of escapes fills the port
            try:
                os.write(writer, b"." * 4096)
            except BlockingIOError:
                break
        received = bytearray()

        def drain() -> None:
            time.sleep(0.3)
            while chunk := os.read(reader, 65536):
                received.extend(chunk)

        thread = threading.Thread(target=drain)
        thread.start()
        line = b"\r\nHOURGLASS-READY 0.1.0\r\n" * 200
        write_within(writer, line, 10)
        os.close(writer)
        writer = -1
        thread.join()
        assert bytes(received).lstrip(b".") == line
    finally:
        if writer >= 0:
            os.close(writer)
        os.close(reader)


def test_a_port_that_never_drains_costs_a_bounded_wait() -> None:
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    try:
        with pytest.raises(TimeoutError, match="not written"):
            while True:
                write_within(writer, b"." * 4096, 0.5)
    finally:
        os.close(writer)
        os.close(reader)
