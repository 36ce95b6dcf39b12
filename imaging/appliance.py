"""What the engine knows about running inside the Hourglass appliance."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from imaging import __version__

READY_MARKER = "HOURGLASS-READY"
SERIAL_CONSOLE = "/dev/ttyS0"


def in_appliance() -> bool:
    """True on the booted appliance (its image sets this file)."""
    return Path("/etc/hourglass/appliance").exists() or os.environ.get("HOURGLASS_APPLIANCE") == "1"


def console_line(text: str) -> None:
    """Write one line to the kernel log and the first serial port (boot tests read them).

    Outside the appliance this does nothing: a developer's serial port is not ours.
    """
    if not in_appliance():
        return
    with contextlib.suppress(OSError), open("/dev/kmsg", "w") as kmsg:
        kmsg.write(f"hourglass: {text}\n")
    serial_line(text)


def serial_line(text: str) -> None:
    """Write one line to the first serial port only (progress a lab's serial log keeps)."""
    if not in_appliance():
        return
    with contextlib.suppress(OSError):
        fd = os.open(SERIAL_CONSOLE, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            os.write(fd, f"\r\n{text}\r\n".encode())
        finally:
            os.close(fd)


def _own_terminal() -> str:
    try:
        return os.ttyname(0)
    except OSError:
        return ""


def announce_ready() -> None:
    """``HOURGLASS-READY <version>``: the app is up; boot tests and lab scripts wait for it.

    The app on the serial port itself does not write there (the line would land inside its
    own screen): the kernel log has it, and the app on the screen writes it to the port.
    """
    line = f"{READY_MARKER} {__version__}"
    if _own_terminal() == SERIAL_CONSOLE:
        if in_appliance():
            with contextlib.suppress(OSError), open("/dev/kmsg", "w") as kmsg:
                kmsg.write(f"hourglass: {line}\n")
        return
    console_line(line)
