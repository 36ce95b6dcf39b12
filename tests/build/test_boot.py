"""Boot tests in QEMU (software emulation): each case waits for HOURGLASS-READY on the serial
console and fails on a kernel panic, a boot loader prompt or the initramfs shell."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from build.context import Context
from build.pipeline import retarget_pxe_bundle
from build.qemu import Boot, Drive, Machine, NetBoot, boot_report, boot_until_ready

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

BOOT_TIMEOUT = 600


def boot(
    machine: Machine, work: Path, results: dict[str, object], case: str, *, booted: bool = False
) -> Boot:
    """Boot until the app is ready; ``booted``: until the system has booted from the medium
    (the boots of one more medium or firmware: the app's start is the CD's and the network's
    boot to check, and the end-to-end tests')."""
    result = boot_until_ready(machine, work, timeout=BOOT_TIMEOUT, booted=booted)
    results[f"boot_seconds.{case}"] = round(result.seconds)
    return result


def reported(result: Boot) -> dict[str, str]:
    return boot_report(result.serial)


def test_bios_cd(appliance: Context, work: Path, results: dict[str, object]) -> None:
    machine = Machine("bios", [Drive(appliance.iso, "cdrom", boot=True)])
    result = boot(machine, work, results, "bios_cd")
    assert result.version == appliance.version
    assert reported(result)["firmware"] == "bios"


def test_bios_usb_disk(appliance: Context, work: Path, results: dict[str, object]) -> None:
    machine = Machine("bios", [Drive(appliance.iso, "usb", boot=True, snapshot=True)])
    result = boot(machine, work, results, "bios_usb", booted=True)
    assert reported(result)["firmware"] == "bios"


def test_uefi_usb(appliance: Context, work: Path, results: dict[str, object]) -> None:
    machine = Machine("uefi", [Drive(appliance.iso, "usb", boot=True, snapshot=True)])
    result = boot(machine, work, results, "uefi_usb", booted=True)
    assert reported(result) | {"kernel": ""} == {
        "firmware": "uefi",
        "secureboot": "off",
        "medium": "disk",
        "kernel": "",
    }


def test_uefi_secure_boot_enforced(
    appliance: Context, work: Path, results: dict[str, object]
) -> None:
    """OVMF with Microsoft's keys enrolled and Secure Boot on: shim, GRUB and kernel are
    checked by signature; the booted system must say Secure Boot is on."""
    machine = Machine("uefi-secure", [Drive(appliance.iso, "cdrom", boot=True)])
    result = boot(machine, work, results, "uefi_secure_boot")
    assert reported(result)["secureboot"] == "on"


@contextlib.contextmanager
def http_server(directory: Path) -> Iterator[int]:
    """A static HTTP server on loopback (QEMU's user network reaches it as 10.0.2.2)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # the guest drops connections when it has what it needs

    server = Quiet(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def pxe_bundle(appliance: Context, tmp_path: Path) -> Iterator[Path]:
    """A copy of the built bundle served over HTTP, its configs pointed at that server."""
    root = tmp_path / "srv"
    bundle = root / appliance.pxe.name
    shutil.copytree(appliance.pxe, bundle, copy_function=os.link)
    for config in ("pxelinux.cfg/default", "grub/grub.cfg", "grub.cfg", "boot.ipxe", "SHA256SUMS"):
        (bundle / config).unlink()
        shutil.copyfile(appliance.pxe / config, bundle / config)
    with http_server(root) as port:
        retarget_pxe_bundle(appliance, bundle, f"http://10.0.2.2:{port}/{bundle.name}")
        subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle, check=True)
        yield bundle


def test_pxe_uefi_secure_boot(pxe_bundle: Path, work: Path, results: dict[str, object]) -> None:
    """OVMF (Secure Boot on) -> TFTP shim -> signed network GRUB -> kernel, initrd -> root
    image over HTTP."""
    machine = Machine("uefi-secure", netboot=NetBoot(pxe_bundle, "bootnetx64.efi"), memory_mib=3072)
    result = boot(machine, work / "boot", results, "pxe_uefi_secure_boot")
    info = reported(result)
    assert (info["medium"], info["firmware"], info["secureboot"]) == ("network", "uefi", "on")
