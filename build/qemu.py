"""Boot the appliance in QEMU (software emulation): for the boot tests and `make run`.

A :class:`Machine` says what firmware and drives a boot uses; :func:`boot_until_ready`
starts it with the serial console in a file and waits for ``HOURGLASS-READY``, failing at
once on a kernel panic, a boot loader prompt or the initramfs shell.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from build.errors import BootFailed
from imaging.process import spawn, which

OVMF = Path("/usr/share/OVMF")
READY = re.compile(rb"HOURGLASS-READY (\S+)")
BOOTED = re.compile(rb"HOURGLASS-BOOT [^\r\n]*kernel=\S+")
# What a boot that went wrong leaves on the serial console.
FAILURES = {
    rb"Kernel panic": "a kernel panic",
    rb"grub rescue>": "the GRUB rescue prompt",
    rb"\ngrub> ": "the GRUB prompt",
    rb"\(initramfs\) ": "the initramfs shell (the root image was not found)",
    rb"Unable to find a medium containing a live file system": "live-boot found no root image",
    rb"No bootable device": "no bootable device",
    rb"Boot failed": "the firmware could not boot",
    rb"Access Denied": "Secure Boot refused a boot loader",
}


@dataclass
class Drive:
    """A drive: ``kind`` is cdrom, usb (usb-storage on xHCI) or disk (virtio)."""

    path: Path
    kind: str = "disk"
    boot: bool = False
    snapshot: bool = False


@dataclass
class NetBoot:
    """QEMU user networking with its TFTP server on ``tftp`` handing out ``bootfile``."""

    tftp: Path
    bootfile: str


@dataclass
class DirectKernel:
    """Boot this kernel and initrd with this command line (QEMU's -kernel), not the boot
    loader's menu: how tests pass unattended orders to the appliance on the ISO."""

    kernel: Path
    initrd: Path
    append: str


@dataclass
class Machine:
    firmware: str = "bios"  # bios | uefi | uefi-secure
    drives: list[Drive] = field(default_factory=list)
    netboot: NetBoot | None = None
    network: bool = True
    memory_mib: int = 2048
    cpus: int = 2
    direct: DirectKernel | None = None

    def argv(self, work: Path, serial: str) -> list[str]:
        """The qemu-system-x86_64 command line; ``serial`` is a QEMU chardev spec."""
        secure = self.firmware == "uefi-secure"
        machine = "q35,smm=on" if secure else "q35"
        argv = [
            which("qemu-system-x86_64"),
            "-accel",
            "tcg",
            "-machine",
            machine,
            "-cpu",
            "max",
            "-smp",
            str(self.cpus),
            "-m",
            str(self.memory_mib),
            "-display",
            "none",
            "-vga",
            "std",
            "-serial",
            serial,
            "-monitor",
            "none",
            "-no-reboot",
        ]
        if self.firmware.startswith("uefi"):
            code = OVMF / ("OVMF_CODE_4M.ms.fd" if secure else "OVMF_CODE_4M.fd")
            template = OVMF / ("OVMF_VARS_4M.ms.fd" if secure else "OVMF_VARS_4M.fd")
            for path in (code, template):
                if not path.exists():
                    raise BootFailed(f"{path} not found.", "Install it with: apt install ovmf")
            variables = work / "OVMF_VARS.fd"
            shutil.copyfile(template, variables)
            if secure:
                argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
            argv += [
                "-drive",
                f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive",
                f"if=pflash,format=raw,unit=1,file={variables}",
            ]
        if self.direct:
            argv += ["-kernel", str(self.direct.kernel), "-initrd", str(self.direct.initrd)]
            argv += ["-append", self.direct.append]
        usb = any(d.kind == "usb" for d in self.drives)
        if usb:
            argv += ["-device", "qemu-xhci,id=xhci"]
        for index, drive in enumerate(self.drives):
            drive_id = f"drive{index}"
            options = f"if=none,id={drive_id},format=raw,file={drive.path}"
            if drive.snapshot:
                options += ",snapshot=on"
            if drive.kind == "cdrom":
                options += ",media=cdrom,readonly=on"
            argv += ["-drive", options]
            boot = ",bootindex=0" if drive.boot else ""
            device = {
                "cdrom": f"ide-cd,drive={drive_id}",
                "usb": f"usb-storage,bus=xhci.0,drive={drive_id},removable=on",
                "disk": f"virtio-blk-pci,drive={drive_id}",
            }[drive.kind]
            argv += ["-device", device + boot]
        if self.netboot:
            # UEFI: OVMF's own network stack, not the iPXE option ROM, whose PXE emulation
            # hands shim a wrongly sized grubx64.efi ("Malformed binary after Attribute
            # Certificate Table"). BIOS: SeaBIOS needs the iPXE ROM to boot from the network.
            rom = ",romfile=" if self.firmware.startswith("uefi") else ""
            argv += [
                "-netdev",
                f"user,id=net0,tftp={self.netboot.tftp},bootfile={self.netboot.bootfile}",
                "-device",
                f"virtio-net-pci,netdev=net0,bootindex=0{rom}",
            ]
        elif self.network:
            argv += ["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0"]
        else:
            argv += ["-nic", "none"]
        return argv


@dataclass
class Boot:
    seconds: float  # from QEMU's start to the first HOURGLASS-READY
    version: str
    serial: bytes


def boot_until_ready(
    machine: Machine,
    work: Path,
    timeout: float = 600,
    ready_count: int = 1,
    *,
    booted: bool = False,
) -> Boot:
    """Boot ``machine``; return when HOURGLASS-READY is on the serial console (``ready_count``
    times: the app on the screen and the one on the serial port each say it), then stop it.
    ``booted``: return at the HOURGLASS-BOOT line instead (the root is mounted from the
    medium and systemd runs its units; about a minute before the app is ready under TCG),
    for boots that test a medium or a firmware, not the app (``version`` is then "").

    Raises :class:`BootFailed` with the serial console's last lines when the boot goes
    wrong or takes longer than ``timeout`` seconds.
    """
    work.mkdir(parents=True, exist_ok=True)
    serial_log = work / "serial.log"
    serial_log.unlink(missing_ok=True)
    argv = machine.argv(work, f"file:{serial_log}")
    (work / "qemu.argv").write_text(" ".join(argv) + "\n")
    started = time.monotonic()
    first_ready: float | None = None
    with (work / "qemu.log").open("wb") as qemu_log:
        process = spawn(argv, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=qemu_log)
    try:
        while True:
            time.sleep(1)
            text = serial_log.read_bytes() if serial_log.exists() else b""
            if booted and BOOTED.search(text):
                return Boot(time.monotonic() - started, "", text)
            ready = READY.findall(text)
            if ready and first_ready is None:
                first_ready = time.monotonic() - started
            if first_ready is not None and len(ready) >= ready_count:
                return Boot(first_ready, ready[0].decode(), text)
            for pattern, what in FAILURES.items():
                if re.search(pattern, text):
                    raise BootFailed(f"The boot stopped at {what}.\n{tail(text)}")
            if process.poll() is not None:
                qemu_says = (work / "qemu.log").read_text(errors="replace").strip()
                raise BootFailed(
                    f"QEMU exited with code {process.returncode} before HOURGLASS-READY. "
                    f"{qemu_says}\n{tail(text)}"
                )
            if time.monotonic() - started > timeout:
                raise BootFailed(f"No HOURGLASS-READY within {timeout:.0f} s.\n{tail(text)}")
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Run:
    seconds: float  # from QEMU's start to its exit
    serial: bytes
    pulled: bool = False  # the plug was pulled (``pull_plug`` said so)


def run_until_exit(
    machine: Machine,
    work: Path,
    timeout: float = 1800,
    pull_plug: Callable[[bytes], bool] | None = None,
) -> Run:
    """Boot ``machine`` and wait for QEMU to exit (the guest powered off or rebooted:
    QEMU runs with -no-reboot). Raises :class:`BootFailed` on a boot that went wrong, or
    when it is still running after ``timeout`` seconds.

    ``pull_plug`` is asked with the serial console's output every 0.2 s; when it says so,
    QEMU is killed at once (SIGKILL): a power loss. What the guest had not flushed is lost;
    what it had written is in the drive files.
    """
    work.mkdir(parents=True, exist_ok=True)
    serial_log = work / "serial.log"
    serial_log.unlink(missing_ok=True)
    argv = machine.argv(work, f"file:{serial_log}")
    (work / "qemu.argv").write_text(" ".join(argv) + "\n")
    started = time.monotonic()
    with (work / "qemu.log").open("wb") as qemu_log:
        process = spawn(argv, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=qemu_log)
    try:
        while process.poll() is None:
            time.sleep(0.2)
            text = serial_log.read_bytes() if serial_log.exists() else b""
            if pull_plug is not None and pull_plug(text):
                process.kill()
                process.wait()
                return Run(time.monotonic() - started, text, pulled=True)
            for pattern, what in FAILURES.items():
                if re.search(pattern, text):
                    raise BootFailed(f"The boot stopped at {what}.\n{tail(text)}")
            if time.monotonic() - started > timeout:
                raise BootFailed(f"Still running after {timeout:.0f} s.\n{tail(text)}")
        seconds = time.monotonic() - started
        text = serial_log.read_bytes() if serial_log.exists() else b""
        if process.returncode != 0:
            qemu_says = (work / "qemu.log").read_text(errors="replace").strip()
            raise BootFailed(f"QEMU exited with code {process.returncode}. {qemu_says}")
        return Run(seconds, text)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def boot_report(serial: bytes) -> dict[str, str]:
    """The appliance's HOURGLASS-BOOT line on a serial console (firmware, Secure Boot state,
    medium, kernel), as a dict; AssertionError when there is none."""
    for line in serial.decode(errors="replace").splitlines():
        if "HOURGLASS-BOOT " in line:
            words = line.split("HOURGLASS-BOOT ", 1)[1].split()
            return dict(w.split("=", 1) for w in words if "=" in w)
    raise AssertionError("no HOURGLASS-BOOT line on the serial console")


def tail(serial: bytes, lines: int = 25) -> str:
    """The last lines of the serial console, without terminal escape sequences."""
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", serial).decode(errors="replace")
    kept = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return "Serial console, last lines:\n  " + "\n  ".join(kept[-lines:])
