"""A lab PC restored with no typing: a QEMU PC set to network boot (SeaBIOS, e1000 with
Debian's iPXE ROM) on a bridge of network namespaces gets the lab's boot entry from
`hourglass lab serve` (proxy DHCP beside the site's own DHCP server, TFTP, HTTP of the
real PXE bundle of `make image`), boots the appliance, joins the session from its kernel
parameters (hourglass.run=restore hourglass.lab=URL), restores its disk, prints its result
line and powers off. Its disk is then checked here (fsck and the files).

This is also the BIOS network boot of the bundle (SeaBIOS + iPXE ROM -> TFTP pxelinux.0 ->
kernel, initrd -> root image over HTTP): the boot tests' own PXE case boots UEFI with Secure
Boot (tests/build/test_boot.py), so the suite boots each path once."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from build.context import Context
from build.qemu import boot_report
from tests.conftest import PASSPHRASE
from tests.e2e.lab import result_lines
from tests.imaging.disks import helpers
from tests.imaging.disks.conftest import weak_repository
from tests.imaging.lab.room import Room
from tests.support import MiB, run_cli

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root, pytest.mark.integration]

SERVER = "10.77.8.1"
DISK_MIB = 96
TIMEOUT = 1200


def test_a_pc_network_boots_and_is_restored_by_the_lab(
    appliance: Context, tmp_path: Path, results: dict[str, object]
) -> None:
    for tool in ("dnsmasq", "qemu-system-x86_64", "sgdisk"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    # The snapshot: a small PC disk with real files.
    layout = [helpers.GptPart(1, "ext4", DISK_MIB - 4, "8300", "labpc", "root")]
    source = tmp_path / "source.img"
    helpers.make_gpt_disk(source, layout, DISK_MIB)
    with helpers.attached(source) as device:
        helpers.make_fs(helpers.node(device, 1), "ext4", "labpc")
        files = helpers.put_files(helpers.node(device, 1), "ext4", tmp_path, 24 * MiB, seed=8)
        repo = weak_repository(tmp_path / "repo")
        secret = tmp_path / "passphrase"
        secret.write_text(PASSPHRASE)
        assert run_cli("backup", "--repo", str(repo.path), "--passphrase-file", str(secret),
                       device) == 0  # fmt: skip
    pc_disk = tmp_path / "pc.img"
    helpers.garbage_file(pc_disk, DISK_MIB * MiB)
    serial = tmp_path / "serial.log"

    with Room("hgq", "10.77.8") as room:
        room.add("srv")
        room.add("site")
        tap = room.tap()
        site = room.run(
            "site", "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
            "--pid-file=", "--leasefile-ro", "--dhcp-range=10.77.8.100,10.77.8.150,255.255.255.0,1h",
            "--interface=eth0", "--bind-interfaces",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        server = room.run(
            "srv", "python", "-m", "imaging.cli.main", "lab", "serve", "--repo",
            str(repo.path), "--passphrase-file", str(secret), "--snapshot", "latest",
            "--address", SERVER, "--bundle", str(appliance.pxe), "--clients", "1",
            "--after", "poweroff",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        started = time.monotonic()
        qemu = room.run(
            "sw", "qemu-system-x86_64", "-machine", "pc,accel=tcg", "-m", "3072", "-smp", "2",
            "-display", "none", "-bios", "/usr/share/seabios/bios-256k.bin",
            "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
            "-device", "e1000,netdev=n0,romfile=/usr/lib/ipxe/qemu/pxe-e1000.rom,bootindex=1",
            "-drive", f"if=none,id=d0,format=raw,file={pc_disk}",
            "-device", "virtio-blk-pci,drive=d0",
            "-no-reboot", "-monitor", "none", "-serial", f"file:{serial}",
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            qemu.wait(TIMEOUT)  # the PC powers off when it is done
        except subprocess.TimeoutExpired:
            qemu.kill()
        seconds = time.monotonic() - started
        try:
            said, _ = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            said, _ = server.communicate()
        site.kill()
    console = serial.read_bytes() if serial.exists() else b""
    tail = console.decode(errors="replace")[-3000:]
    lines = result_lines(console)
    assert len(lines) == 1, f"the PC's result lines: {lines}\n{tail}\nserver:\n{said}"
    assert lines[0].startswith("HOURGLASS-RESULT: OK lab restore of "), lines[0]
    booted = boot_report(console)
    assert (booted["firmware"], booted["medium"]) == ("bios", "network"), booted
    assert server.returncode == 0, said
    assert "HOURGLASS-RESULT: OK 1 of 1 PCs restored and verified" in said, said
    assert "network-boots" in said, "the server saw the PC boot from the network"
    with helpers.attached(pc_disk) as device:
        check = helpers.fsck(helpers.node(device, 1), "ext4")
        assert check.returncode == 0, check.stdout + check.stderr
        assert helpers.read_files(helpers.node(device, 1), "ext4", tmp_path) == files
    results["lab_pxe_restore_seconds"] = round(seconds)
    print(f"\npower-on to powered off, restored and verified: {seconds:.0f} s\n{lines[0]}")
    assert os.path.getsize(pc_disk) == DISK_MIB * MiB
