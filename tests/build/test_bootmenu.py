"""Boot menus rendered from image/boot/: every entry on every boot path, nothing unfilled."""

from __future__ import annotations

import re

import pytest

from build import bootmenu
from build.context import REPOSITORY

BOOT = REPOSITORY / "image" / "boot"


@pytest.mark.parametrize("template", ["grub.cfg.in", "isolinux.cfg.in", "boot.ipxe.in"])
def test_every_entry_is_rendered_with_its_parameters(template: str) -> None:
    entries = bootmenu.load_entries(BOOT, "Acme")
    assert [e.id for e in entries] == ["start", "toram", "serial", "safe"]
    text = bootmenu.render(
        BOOT / template,
        entries,
        base_params="boot=live fetch=http://x/y.squashfs",
        kernel="/live/vmlinuz",
        initrd="/live/initrd.img",
        where="test",
        name="Acme",
        version="9.9",
    )
    assert "Start Acme" in text
    for entry in entries:
        assert entry.label in text
        assert f"boot=live fetch=http://x/y.squashfs {entry.options}" in text
    assert text.count("toram") >= 1 and "nomodeset" in text
    assert re.search(r"\$(?!\{?(target|cmdpath)\b)\w", text) is None, "an unfilled placeholder"


def test_every_entry_has_a_serial_console() -> None:
    for entry in bootmenu.load_entries(BOOT, "Hourglass"):
        assert "console=ttyS0,115200n8" in entry.options, entry.id
