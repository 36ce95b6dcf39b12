"""Network boot for a lab session: PCs set to boot from the network start Hourglass and join.

dnsmasq runs in proxy-DHCP mode: the site's DHCP server keeps giving the addresses, and
dnsmasq only adds the boot offer (PXE clients ask it on port 4011), so nothing of the site's
network changes. It serves the bootloaders, kernel and initrd of a PXE bundle (``make
image`` builds one: ``hourglass-<version>-pxe``) over TFTP; the root image goes over HTTP
from this process, since live-boot fetches it into RAM. The boot configs are written for the
session, a single entry with no menu, whose kernel command line carries
``hourglass.run=restore`` and the lab server's address (``hourglass.lab=URL``): a PC that
boots it restores with no typing.

dnsmasq's log tells which PCs (by MAC) asked for the boot offer, so a dashboard can show a
PC before its receiver runs.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from imaging import process
from imaging.errors import HourglassError, UsageError

BUNDLE_FILES = ("vmlinuz", "initrd.img", "filesystem.squashfs", "pxelinux.0", "ldlinux.c32")
"""What a bundle must hold for BIOS network boot (the UEFI files are used when present)."""

UEFI_FILES = ("bootnetx64.efi", "grubx64.efi", "mmx64.efi")
TFTP_FILES = ("vmlinuz", "initrd.img", "pxelinux.0", "ldlinux.c32", *UEFI_FILES)

CONSOLE = "console=ttyS0,115200n8 console=tty0"
"""As the appliance's own boot entries: the result line reaches the first serial port."""

DEFAULT_BUNDLES = (Path("/usr/share/hourglass/pxe"), Path("/run/live/medium/pxe"))

_BOOTED = re.compile(r"PXE\(\S+\) (?P<mac>[0-9a-f]{2}(?::[0-9a-f]{2}){5}) proxy", re.I)


@dataclass(frozen=True)
class LabNetwork:
    """The server's side of the lab network: its interface, address and network."""

    interface: str
    address: str
    network: ipaddress.IPv4Network

    @property
    def netmask(self) -> str:
        return str(self.network.netmask)


def lab_network(interface: str | None = None, address: str | None = None) -> LabNetwork:
    """The interface and IPv4 address to serve the lab on: the one named, the interface
    holding ``address``, or the only interface with a private IPv4 address."""
    out = process.run(["ip", "-j", "-4", "addr", "show"]).stdout
    found: list[LabNetwork] = []
    for link in json.loads(out or b"[]"):
        for info in link.get("addr_info", []):
            if info.get("family") != "inet":
                continue
            iface = ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
            found.append(LabNetwork(link["ifname"], str(iface.ip), iface.network))
    candidates = [
        n
        for n in found
        if (interface is None or n.interface == interface)
        and (address is None or n.address == address)
        and not ipaddress.IPv4Address(n.address).is_loopback
    ]
    if interface is None and address is None:
        candidates = [n for n in candidates if ipaddress.IPv4Address(n.address).is_private]
    if len(candidates) == 1:
        return candidates[0]
    named = " ".join(
        f"{k} {v}" for k, v in (("--interface", interface), ("--address", address)) if v
    )
    if not candidates:
        have = ", ".join(f"{n.interface} {n.address}/{n.network.prefixlen}" for n in found)
        raise UsageError(
            f"No IPv4 address to serve the lab on{' for ' + named if named else ''}.",
            f"This machine has: {have or 'no IPv4 address'}.",
        )
    choices = ", ".join(f"{n.interface} {n.address}" for n in candidates)
    raise UsageError(
        f"More than one network could be the lab's: {choices}.",
        "Name it with --interface IF (or --address A).",
    )


def find_bundle(path: str | os.PathLike[str] | None) -> Path:
    """The PXE bundle to serve: the one named, or one installed where Hourglass puts it."""
    candidates = [Path(path)] if path is not None else list(DEFAULT_BUNDLES)
    for bundle in candidates:
        if bundle.is_dir():
            missing = [name for name in BUNDLE_FILES if not (bundle / name).is_file()]
            if missing:
                raise UsageError(
                    f"{bundle} is not a PXE bundle: it has no {', '.join(missing)}.",
                    "Name the hourglass-<version>-pxe folder that `make image` builds.",
                )
            return bundle
    if path is not None:
        raise UsageError(f"There is no folder {path}.")
    raise UsageError(
        "No PXE bundle to boot the PCs from.",
        "Name one with --bundle DIR (the hourglass-<version>-pxe folder `make image` builds).",
    )


def kernel_options(bundle_url: str, lab_url: str, after: str) -> str:
    """The boot entry's kernel command line: live-boot fetches the root image from us, then
    the appliance restores from the lab server and does ``after``."""
    return (
        f"boot=live fetch={bundle_url}/filesystem.squashfs quiet loglevel=3 {CONSOLE} "
        f"hourglass.run=restore hourglass.lab={lab_url} hourglass.after={after}"
    )


def write_boot_configs(root: Path, options: str, title: str) -> None:
    """PXELINUX (BIOS), GRUB (UEFI, through shim) and iPXE configs of one entry, no menu."""
    (root / "pxelinux.cfg").mkdir(parents=True, exist_ok=True)
    (root / "grub").mkdir(exist_ok=True)
    (root / "pxelinux.cfg" / "default").write_text(
        "SERIAL 0 115200\n"
        "PROMPT 0\n"
        "TIMEOUT 1\n"
        "DEFAULT lab\n"
        "LABEL lab\n"
        f"\tMENU LABEL {title}\n"
        "\tKERNEL vmlinuz\n"
        f"\tAPPEND initrd=initrd.img {options}\n"
    )
    grub = (
        "set timeout=0\n"
        f'menuentry "{title}" {{\n'
        f"\tlinux $cmdpath/vmlinuz {options}\n"
        "\tinitrd $cmdpath/initrd.img\n"
        "}\n"
    )
    (root / "grub" / "grub.cfg").write_text(grub)
    (root / "grub.cfg").write_text(grub)
    (root / "boot.ipxe").write_text(
        f"#!ipxe\nkernel vmlinuz initrd=initrd.img {options}\ninitrd initrd.img\nboot\n"
    )


def _others_can_read(path: Path) -> bool:
    """Whether a user other than root (dnsmasq drops to one) can read ``path``."""
    try:
        if not path.stat().st_mode & stat.S_IROTH:
            return False
        return all(p.stat().st_mode & stat.S_IXOTH for p in path.resolve().parents)
    except OSError:
        return False


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class PxeBoot:
    """dnsmasq (proxy DHCP and TFTP) and an HTTP server of the bundle, for one session."""

    def __init__(
        self,
        bundle: Path,
        network: LabNetwork,
        lab_url: str,
        *,
        http_port: int = 8471,
        after: str = "poweroff",
        title: str = "Hourglass lab restore",
        on_boot: Callable[[str], None] | None = None,
    ) -> None:
        self.bundle = bundle
        self.network = network
        self.lab_url = lab_url
        self.http_port = http_port
        self.after = after
        self.title = title
        self.on_boot = on_boot
        self.booted: list[str] = []
        """MACs that asked for the boot offer, first time each, in order."""
        self._root: Path | None = None
        self._dnsmasq: subprocess.Popen[bytes] | None = None
        self._http: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.log: list[str] = []

    @property
    def root(self) -> Path:
        """The TFTP root of the session (the boot configs), while it runs."""
        if self._root is None:
            raise HourglassError("The lab's network boot is not running.")
        return self._root

    @property
    def bundle_url(self) -> str:
        return f"http://{self.network.address}:{self.http_port}"

    def _stage(self) -> Path:
        """The TFTP and HTTP root: the bundle's files (linked, or copied where dnsmasq's
        user could not read them) and this session's boot configs."""
        root = Path(tempfile.mkdtemp(prefix="hourglass-lab-"))
        root.chmod(0o755)
        for name in (*TFTP_FILES, "filesystem.squashfs"):
            source = self.bundle / name
            if not source.is_file():
                continue
            if name == "filesystem.squashfs" or _others_can_read(source):
                (root / name).symlink_to(source.resolve())
            else:
                shutil.copyfile(source, root / name)
                (root / name).chmod(0o644)
        write_boot_configs(
            root, kernel_options(self.bundle_url, self.lab_url, self.after), self.title
        )
        for path in root.rglob("*"):
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
        return root

    def start(self) -> None:
        self._root = root = self._stage()
        handler = partial(_Quiet, directory=str(root))
        try:
            self._http = ThreadingHTTPServer((self.network.address, self.http_port), handler)
        except OSError as e:
            self.stop()
            if e.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"Port {self.http_port} on {self.network.address} is in use.",
                    "Stop what serves on it, or choose another pair with --http-port (the "
                    "network boot takes the port after the session's).",
                ) from None
            raise
        self._http.daemon_threads = True
        self._spawn(self._http.serve_forever)
        uefi = (root / "bootnetx64.efi").exists()
        argv = [
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--pid-file=",
            "--leasefile-ro",
            "--log-facility=-",
            "--log-dhcp",
            f"--interface={self.network.interface}",
            "--bind-interfaces",
            f"--dhcp-range={self.network.network.network_address},proxy,{self.network.netmask}",
            f"--pxe-service=x86PC,{self.title},pxelinux",
            *([f"--pxe-service=X86-64_EFI,{self.title},bootnetx64.efi"] if uefi else []),
            "--enable-tftp",
            f"--tftp-root={root}",
        ]
        self._dnsmasq = process.spawn(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self._spawn(self._read_log)

    def _spawn(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _read_log(self) -> None:
        assert self._dnsmasq is not None and self._dnsmasq.stdout is not None
        for raw in self._dnsmasq.stdout:
            line = raw.decode(errors="replace").rstrip()
            with self._lock:
                self.log.append(line)
                del self.log[:-1000]
            m = _BOOTED.search(line)
            if m is None:
                continue
            mac = m.group("mac").lower()
            with self._lock:
                new = mac not in self.booted
                if new:
                    self.booted.append(mac)
            if new and self.on_boot is not None:
                self.on_boot(mac)

    def check(self) -> None:
        """Raise if dnsmasq has stopped (a port taken by another DHCP proxy, a bad option)."""
        if self._dnsmasq is not None and self._dnsmasq.poll() is not None:
            with self._lock:
                last = self.log[-1] if self.log else f"exit code {self._dnsmasq.returncode}"
            raise HourglassError(f"dnsmasq stopped: {last}")

    def stop(self) -> None:
        if self._dnsmasq is not None:
            self._dnsmasq.terminate()
            try:
                self._dnsmasq.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._dnsmasq.kill()
                self._dnsmasq.wait()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
        self._dnsmasq = self._http = self._root = None
        self._threads = []

    def __enter__(self) -> PxeBoot:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
