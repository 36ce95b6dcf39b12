"""Vendor files: the defaults parse, overrides apply, and a bad file names its line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from build.context import REPOSITORY
from build.errors import VendorError
from build.vendor import Vendor, load_vendor, render_vendor

DEFAULTS = REPOSITORY / "image" / "vendor.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vendor.toml"
    path.write_text(text)
    return path


def test_documented_defaults_equal_the_built_in_defaults() -> None:
    vendor = load_vendor(DEFAULTS)
    defaults = Vendor()
    for field in (
        "name",
        "slug",
        "primary",
        "accent",
        "background",
        "language",
        "repository",
        "unattended_action",
        "unattended_source",
        "unattended_after",
        "packages",
        "pxe_url",
    ):
        assert getattr(vendor, field) == getattr(defaults, field), field


def test_a_vendor_file_changes_only_what_it_names(tmp_path: Path) -> None:
    (tmp_path / "motd.txt").write_text("Acme recovery\n")
    vendor = load_vendor(
        write(
            tmp_path,
            '[product]\nname = "Acme Rescue"\nslug = "acme-rescue"\n'
            '[defaults]\nlanguage = "zh_CN"\n'
            '[packages]\nextra = ["vim-tiny", "firmware-iwlwifi"]\n'
            '[files]\n"/etc/motd" = "motd.txt"\n',
        )
    )
    assert (vendor.name, vendor.slug, vendor.language) == ("Acme Rescue", "acme-rescue", "zh_CN")
    assert vendor.packages == ("vim-tiny", "firmware-iwlwifi")
    assert vendor.primary == Vendor().primary
    assert vendor.extra_files() == [(tmp_path / "motd.txt", "/etc/motd")]
    assert 'name = "Acme Rescue"' in render_vendor(vendor)


@pytest.mark.parametrize(
    ("text", "line", "key", "words"),
    [
        ('[product]\nname = "X"\nslgu = "x"\n', 3, "product.slgu", "unknown key"),
        (
            '[product]\nname = "X"\n\n[colours]\nprimary = "blue"\n',
            5,
            "colours.primary",
            "a colour",
        ),
        ('[defaults]\nlanguage = "fr_FR"\n', 2, "defaults.language", "en_US, zh_CN"),
        ('[packages]\nextra = "vim"\n', 2, "packages.extra", "list"),
        ('[packages]\nextra = ["Bad Name"]\n', 2, "packages.extra", "not a Debian package"),
        ('[product]\nname = "X"\n[brand]\nlogo = "x.png"\n', 3, "brand", "unknown table"),
        ('[product]\nname = "X\n', 2, None, "not valid TOML"),
        ('[files]\n"/etc/motd" = "missing.txt"\n', 2, "files./etc/motd", "is not a file"),
        ('[files]\n"etc/motd" = "vendor.toml"\n', 2, "files.etc/motd", "absolute path"),
        ('[pxe]\nurl = "ftp://x"\n', 2, "pxe.url", "http://"),
    ],
)
def test_a_bad_vendor_file_names_the_line_and_key(
    tmp_path: Path, text: str, line: int, key: str | None, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(VendorError) as caught:
        load_vendor(path)
    error = caught.value
    assert (error.line, error.key) == (line, key)
    assert words in str(error)
    assert f"{path}, line {line}" in str(error)


def test_the_build_command_reports_a_bad_vendor_file_and_builds_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, '[colours]\naccent = "#12345"\n')
    result = subprocess.run(
        [sys.executable, "-m", "build", "image", "--vendor", str(path)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == VendorError.exit_code
    assert f"{path}, line 2 (key 'colours.accent')" in result.stderr
    assert "Traceback" not in result.stderr
