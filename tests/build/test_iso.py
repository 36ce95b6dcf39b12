"""Static checks of the built ISO and PXE bundle: layout, boot records, sizes, checksums."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from build.context import Context
from build.pipeline import BOOT_FILES, ISO_LIMIT

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


def xorriso(iso: Path, *commands: str) -> str:
    result = subprocess.run(
        ["xorriso", "-indev", str(iso), *commands], capture_output=True, text=True, check=True
    )
    return result.stdout + result.stderr


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_iso_has_bios_and_uefi_el_torito_entries(appliance: Context) -> None:
    report = xorriso(appliance.iso, "-report_el_torito", "plain")
    entries = [line for line in report.splitlines() if re.match(r"El Torito boot img\s*:", line)]
    assert len(entries) == 2, report
    assert re.search(r"El Torito boot img :\s+1\s+BIOS\s+y\s+none", report), report
    assert re.search(r"El Torito boot img :\s+2\s+UEFI\s+y\s+none", report), report
    assert "/isolinux/isolinux.bin" in report
    assert "/boot/grub/efi.img" in report


def test_iso_is_hybrid_with_mbr_and_gpt(appliance: Context) -> None:
    report = xorriso(appliance.iso, "-report_system_area", "plain")
    assert re.search(r"System area summary: MBR isohybrid .*GPT", report), report
    # MBR: the whole image (bootable, for BIOS from USB) and the EFI image as type 0xef.
    assert re.search(r"MBR partition\s*:\s+1\s+0x80\s+0x00\s+0\s", report), report
    assert re.search(r"MBR partition\s*:\s+2\s+0x00\s+0xef\s", report), report
    assert re.search(r"MBR partition path\s*:\s+2\s+/boot/grub/efi.img", report), report
    # GPT: the same EFI image, for firmware that reads GPT first.
    assert re.search(r"GPT partition path\s*:\s+\d+\s+/boot/grub/efi.img", report), report


def test_iso_holds_the_live_system_and_the_signed_boot_chain(
    appliance: Context, tmp_path: Path
) -> None:
    listing = xorriso(appliance.iso, "-find", "/", "-type", "f")
    for path in (
        "/live/vmlinuz",
        "/live/initrd.img",
        "/live/filesystem.squashfs",
        "/isolinux/isolinux.cfg",
        "/boot/grub/grub.cfg",
        "/.disk/info",
    ):
        assert f"'{path}'" in listing, path
    efi = tmp_path / "efi.img"
    xorriso(appliance.iso, "-osirrox", "on", "-extract", "/boot/grub/efi.img", str(efi))
    for inside, host in (
        ("BOOTX64.EFI", "shimx64.efi"),
        ("grubx64.efi", "gcdx64.efi"),
        ("mmx64.efi", "mmx64.efi"),
    ):
        copy = tmp_path / inside
        subprocess.run(["mcopy", "-i", str(efi), f"::/EFI/BOOT/{inside}", str(copy)], check=True)
        assert sha256(copy) == sha256(BOOT_FILES[host][0]), inside
    menu = tmp_path / "grub.cfg"
    xorriso(appliance.iso, "-osirrox", "on", "-extract", "/boot/grub/grub.cfg", str(menu))
    text = menu.read_text()
    labels = re.findall(r'menuentry "([^"]+)"', text)
    assert labels[0] == "Start Hourglass"
    assert any("RAM" in label for label in labels)
    assert any("Serial console" in label for label in labels)
    assert any("Safe graphics" in label for label in labels)
    assert "toram" in text and "nomodeset" in text and "console=ttyS0,115200n8" in text


def test_iso_size_is_within_the_limit(appliance: Context, results: dict[str, object]) -> None:
    size = appliance.iso.stat().st_size
    results["iso_mib"] = round(size / 2**20, 1)
    results["squashfs_mib"] = round(appliance.squashfs.stat().st_size / 2**20, 1)
    results["initrd_mib"] = round(appliance.initrd.stat().st_size / 2**20, 1)
    assert size <= ISO_LIMIT


def test_checksums_cover_every_output(appliance: Context) -> None:
    sums = appliance.checksums.read_text().splitlines()
    names = {line.split("  ", 1)[1] for line in sums}
    assert appliance.iso.name in names
    assert f"{appliance.pxe.name}/filesystem.squashfs" in names
    assert f"{appliance.pxe.name}/pxelinux.cfg/default" in names
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=appliance.dist, check=True)
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=appliance.pxe, check=True)


def test_pxe_bundle_has_every_boot_path(appliance: Context) -> None:
    bundle = appliance.pxe
    for name in (
        "vmlinuz",
        "initrd.img",
        "filesystem.squashfs",
        "pxelinux.0",
        "ldlinux.c32",
        "pxelinux.cfg/default",
        "bootnetx64.efi",
        "grubx64.efi",
        "grub/grub.cfg",
        "boot.ipxe",
        "README.md",
        "SHA256SUMS",
    ):
        assert (bundle / name).is_file(), name
    assert sha256(bundle / "bootnetx64.efi") == sha256(BOOT_FILES["shimx64.efi"][0])
    assert sha256(bundle / "grubx64.efi") == sha256(BOOT_FILES["grubnetx64.efi"][0])
    url = f"{appliance.vendor.pxe_url}/{bundle.name}/filesystem.squashfs"
    for config in ("pxelinux.cfg/default", "grub/grub.cfg", "boot.ipxe"):
        assert f"fetch={url}" in (bundle / config).read_text(), config
    readme = (bundle / "README.md").read_text()
    assert "dhcp-boot=" in readme and "enable-tftp" in readme


def test_root_image_contents(appliance: Context, tmp_path: Path) -> None:
    """What the issue asks of the root: the app, consoles, font, locales, network; no docs."""
    listing = subprocess.run(
        ["unsquashfs", "-lls", str(appliance.squashfs)], capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    paths = {line.split("squashfs-root", 1)[1].split(" -> ")[0] for line in listing.splitlines()
             if "squashfs-root/" in line}  # fmt: skip
    for path in (
        "/etc/hourglass/appliance",
        "/etc/hourglass/vendor.toml",
        "/opt/hourglass/bin/hourglass",
        "/usr/bin/kmscon",
        "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
        "/etc/systemd/network/20-wired.network",
        "/etc/systemd/system/multi-user.target.wants/hourglass-console.service",
        "/etc/systemd/system/multi-user.target.wants/hourglass-serial.service",
        "/etc/systemd/system/getty.target.wants/getty@tty2.service",
        "/etc/systemd/system/getty@tty2.service.d/autologin.conf",
        "/usr/lib/live/boot/9990-main.sh",
        "/sbin/partclone.ext4",
    ):
        assert path in paths or f"/usr{path}" in paths, path
    masked = [line for line in listing.splitlines() if "-> /dev/null" in line]
    for unit in ("serial-getty@ttyS0.service", "getty@tty1.service", "kmsconvt@tty1.service"):
        assert any(f"/etc/systemd/system/{unit} " in line for line in masked), unit
    assert "/etc/systemd/system/autovt@.service" not in paths  # tty2 is a getty, not kmscon
    assert not any(p.startswith("/usr/share/man/") for p in paths)
    doc_files = [
        line.split("squashfs-root", 1)[1]
        for line in listing.splitlines()
        if line.startswith("-") and "squashfs-root/usr/share/doc/" in line
    ]
    assert doc_files and all(p.endswith("/copyright") for p in doc_files), doc_files[:5]
    # Only the two locales, in the archive.
    out = tmp_path / "root"
    subprocess.run(["unsquashfs", "-q", "-d", str(out), str(appliance.squashfs),
                    "usr/lib/locale/locale-archive"], check=True, capture_output=True)  # fmt: skip
    locales = subprocess.run(["localedef", f"--prefix={out}", "--list-archive"],
                             capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert sorted(locales) == ["en_US.utf8", "zh_CN.utf8"]
