"""A PC set to network boot gets the lab's boot entry: proxy DHCP beside the site's own DHCP
server, TFTP of PXELINUX, its config and the kernel and initrd, from `imaging.lab.pxe`.

A real QEMU guest (SeaBIOS, e1000 with Debian's iPXE ROM) on a tap in a bridge of network
namespaces; the site's DHCP is a second dnsmasq that knows nothing of PXE. The bundle holds
the real PXELINUX and placeholder kernel, initrd and root image: what is checked is the boot
chain up to the kernel, and the entry's command line (the appliance's boot itself is tested
in tests/build)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging.errors import UsageError
from imaging.lab.pxe import find_bundle, lab_network

SWITCH, SERVER, SITE = "hg-lab-sw", "hg-lab-srv", "hg-lab-site"
MAC = "52:54:00:4c:41:42"

SERVE = """
import json, sys, time, urllib.request
from pathlib import Path
from imaging.lab.pxe import PxeBoot, lab_network

network = lab_network(interface="eth0")
boot = PxeBoot(Path(sys.argv[1]), network, "http://10.77.5.1:8470", http_port=8471)
boot.start()
print("ready", flush=True)
started = time.monotonic()
while time.monotonic() - started < 240:
    boot.check()
    if any("/initrd.img to" in line for line in boot.log):
        break
    time.sleep(0.5)
root_image = urllib.request.urlopen("http://10.77.5.1:8471/filesystem.squashfs").read()
entry = (boot.root / "pxelinux.cfg" / "default").read_text()
print(json.dumps({"booted": boot.booted, "log": boot.log, "entry": entry, "root_image": root_image.decode()}), flush=True)
boot.stop()
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


@pytest.fixture
def room() -> Iterator[None]:
    """A switch namespace with a bridge and a tap; the lab server and the site's DHCP
    server, each a namespace on a veth port of the bridge."""
    if shutil.which("dnsmasq") is None or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs dnsmasq and qemu-system-x86")
    try:
        for name in (SWITCH, SERVER, SITE):
            ip("netns", "add", name)
        ip("-n", SWITCH, "link", "add", "br0", "type", "bridge")
        ip("-n", SWITCH, "link", "set", "br0", "up")
        for host, address in ((SERVER, "10.77.5.1/24"), (SITE, "10.77.5.2/24")):
            port = f"v-{host[-4:]}"
            ip(
                "-n",
                SWITCH,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host,
            )
            ip("-n", SWITCH, "link", "set", port, "master", "br0", "up")
            ip("-n", host, "addr", "add", address, "brd", "+", "dev", "eth0")
            ip("-n", host, "link", "set", "eth0", "up")
            ip("-n", host, "link", "set", "lo", "up")
        ip("-n", SWITCH, "tuntap", "add", "dev", "tap0", "mode", "tap")
        ip("-n", SWITCH, "link", "set", "tap0", "master", "br0", "up")
        yield
    finally:
        for name in (SWITCH, SERVER, SITE):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
            for pid in pids.stdout.split():
                subprocess.run(["kill", "-9", pid], check=False)
            subprocess.run(["ip", "netns", "del", name], check=False)


def bundle(root: Path) -> Path:
    root.mkdir()
    shutil.copyfile("/usr/lib/PXELINUX/pxelinux.0", root / "pxelinux.0")
    shutil.copyfile("/usr/lib/syslinux/modules/bios/ldlinux.c32", root / "ldlinux.c32")
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        (root / name).write_bytes(name.encode() * 1000)
    return root


@pytest.mark.root
@pytest.mark.integration
@pytest.mark.qemu
@pytest.mark.slow
def test_a_pc_set_to_network_boot_gets_the_lab_entry(room: None, tmp_path: Path) -> None:
    site = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            SITE,
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--pid-file=",
            "--leasefile-ro",
            "--interface=eth0",
            "--bind-interfaces",
            "--dhcp-range=10.77.5.100,10.77.5.150,255.255.255.0,1h",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = subprocess.Popen(
        ["ip", "netns", "exec", SERVER, sys.executable, "-c", SERVE, str(bundle(tmp_path / "b"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    serial = tmp_path / "serial.log"
    guest = None
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        guest = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                SWITCH,
                "qemu-system-x86_64",
                "-machine",
                "pc,accel=tcg",
                "-m",
                "256",
                "-display",
                "none",
                "-bios",
                "/usr/share/seabios/bios-256k.bin",
                "-netdev",
                "tap,id=n0,ifname=tap0,script=no,downscript=no",
                "-device",
                f"e1000,netdev=n0,mac={MAC},romfile=/usr/lib/ipxe/qemu/pxe-e1000.rom,bootindex=1",
                "-no-reboot",
                "-serial",
                f"file:{serial}",
            ],
        )
        started = time.monotonic()
        # The server ends when the initrd is sent (a placeholder kernel then fails to boot).
        report = json.loads(server.stdout.readline())
        print(f"network boot to the kernel and initrd: {time.monotonic() - started:.1f} s")
    finally:
        for p in (guest, server, site):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    log = "\n".join(report["log"])
    assert report["booted"] == [MAC], log
    for name in ("pxelinux.0", "ldlinux.c32", "pxelinux.cfg/default", "vmlinuz", "initrd.img"):
        assert f"/{name} to 10.77.5." in log, (name, log)
    # The entry PXELINUX read is the lab's: live-boot fetches the root image from this
    # server over HTTP, and the appliance restores from the lab with no typing.
    entry = report["entry"]
    assert "KERNEL vmlinuz" in entry
    assert "fetch=http://10.77.5.1:8471/filesystem.squashfs" in entry
    assert "hourglass.run=restore hourglass.lab=http://10.77.5.1:8470" in entry
    assert "console=ttyS0,115200n8" in entry
    assert report["root_image"] == (tmp_path / "b" / "filesystem.squashfs").read_text()


def test_the_lab_network_must_exist() -> None:
    with pytest.raises(UsageError) as e:
        lab_network(interface="nothere0")
    assert "nothere0" in e.value.message and "This machine has" in (e.value.hint or "")


def test_a_folder_that_is_not_a_bundle_is_named(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(b"x")
    with pytest.raises(UsageError) as e:
        find_bundle(tmp_path)
    assert str(tmp_path) in e.value.message and "pxelinux.0" in e.value.message
    with pytest.raises(UsageError):
        find_bundle(tmp_path / "nothere")
