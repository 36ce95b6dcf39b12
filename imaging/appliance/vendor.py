"""What the engine knows about running inside the Hourglass appliance: its marker, its
consoles, and the vendor's settings the build wrote (``/etc/hourglass/vendor.toml``)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import signal
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imaging import __version__

log = logging.getLogger(__name__)

READY_MARKER = "HOURGLASS-READY"
SERIAL_CONSOLE = "/dev/ttyS0"
SERIAL_WRITE_SECONDS = 10.0
VENDOR_FILE = Path("/etc/hourglass/vendor.toml")
VENDOR_FILE_VARIABLE = "HOURGLASS_VENDOR_FILE"


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


# Set once a serial line timed out: later lines take what fits, at once.
_port_stuck = threading.Event()


def serial_line(text: str) -> None:
    """Write one line to the first serial port only (progress a lab's serial log keeps)."""
    if not in_appliance():
        return
    with contextlib.suppress(OSError):
        fd = os.open(SERIAL_CONSOLE, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            wait = 0.0 if _port_stuck.is_set() else SERIAL_WRITE_SECONDS
            write_within(fd, f"\r\n{text}\r\n".encode(), wait)
        except TimeoutError:
            _port_stuck.set()  # one wait per process: later lines take what fits, at once
        finally:
            os.close(fd)
        redraw_screen_on(SERIAL_CONSOLE)


def redraw_screen_on(tty: str) -> bool:
    """Ask what runs in the foreground of ``tty`` to draw its screen again, over a line just
    written there from outside (the app on the serial port redraws on SIGWINCH; a shell or
    getty ignores it: its default action). True when a process group was told."""
    try:
        rdev = os.stat(tty).st_rdev
    except OSError:
        return False
    wanted = (os.major(rdev), os.minor(rdev))
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                # pid (comm) state ppid pgrp session tty_nr tpgid ...: comm may hold spaces
                fields = f.read().rsplit(b")", 1)[1].split()
            tty_nr, foreground = int(fields[4]), int(fields[5])
        except (OSError, IndexError, ValueError):
            continue
        major, minor = (tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
        if (major, minor) == wanted and foreground > 0:
            with contextlib.suppress(OSError):
                os.killpg(foreground, signal.SIGWINCH)
                return True
    return False


def write_within(fd: int, data: bytes, seconds: float) -> None:
    """Write all of ``data`` to the non-blocking ``fd``, waiting while its buffer is full.

    At 115200 baud the port drains about 11 KiB a second, and the app on the port fills its
    buffer when it draws a screen: one write would then take part of the line or none of it
    (the READY and RESULT lines were lost that way). A port that does not drain at all (flow
    control held) costs ``seconds``, then OSError, never a hung caller.
    """
    deadline = time.monotonic() + seconds
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
            continue
        except BlockingIOError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{len(view)} of {len(data)} bytes not written in {seconds:.0f} s")
        select.select([], [fd], [], min(left, 0.5))


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


# --- the vendor's settings ------------------------------------------------------------------


@dataclass(frozen=True)
class RepositoryHint:
    """Where the vendor says the repository is (``[defaults] repository``), parsed."""

    kind: str  # "label", "path" or "smb"
    where: str  # the filesystem label, or the SMB server; "" for a path
    path: str  # inside the labelled filesystem ("/hourglass"), the path, or "share/folder"

    def as_location(self) -> str:
        """The same place in the form of ``hourglass.repo=`` (unattended orders)."""
        if self.kind == "label":
            return f"LABEL={self.where}:{self.path}"
        if self.kind == "smb":
            return f"smb://{self.where}/{self.path}"
        return self.path


def repository_hint(text: str) -> RepositoryHint | None:
    """``label:LABEL/path``, a plain absolute path or ``smb://server/share/path``; None for
    an empty text or one of none of these forms (the build only checks that it is a string).
    """
    text = text.strip()
    if text.startswith("label:"):
        label, _, inside = text.removeprefix("label:").partition("/")
        return RepositoryHint("label", label, "/" + inside.strip("/")) if label else None
    found = re.match(r"^smb://([^/\s]+)/(\S+)$", text)
    if found and found.group(2).strip("/"):
        return RepositoryHint("smb", found.group(1), found.group(2).strip("/"))
    if text.startswith("/"):
        return RepositoryHint("path", "", text.rstrip("/") or "/")
    return None


@dataclass(frozen=True)
class VendorSettings:
    """What the vendor set for the app and the engine; the defaults are Hourglass's own (those
    documented in ``image/vendor.toml``). The packages and files a vendor adds are used by the
    build only and are not here."""

    name: str = "Hourglass"
    slug: str = "hourglass"
    primary: str = "#2e7dd7"
    accent: str = "#f2a900"
    background: str = "#10151c"
    language: str = "en_US"
    repository: str = ""
    unattended_action: str = "none"
    unattended_source: str = ""
    unattended_after: str = "stay"
    path: Path | None = None  # the file these were read from; None: the built-in defaults

    @property
    def custom_colours(self) -> bool:
        """True when the vendor chose colours of its own. The documented default colours keep
        the app's standard theme, so an unbranded appliance looks as it always did."""
        default = VendorSettings()
        return (self.primary, self.accent, self.background) != (
            default.primary,
            default.accent,
            default.background,
        )

    def repository_hint(self) -> RepositoryHint | None:
        return repository_hint(self.repository)


_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
# table -> key -> (VendorSettings field, accepted values: a pattern, choices, or None: any text)
_VENDOR_KEYS: dict[str, dict[str, tuple[str, Any]]] = {
    "product": {"name": ("name", None), "slug": ("slug", None)},
    "colours": {
        "primary": ("primary", _COLOUR),
        "accent": ("accent", _COLOUR),
        "background": ("background", _COLOUR),
    },
    "defaults": {
        "language": ("language", ("en_US", "zh_CN")),
        "repository": ("repository", None),
    },
    "unattended": {
        "action": ("unattended_action", ("none", "backup", "restore", "verify")),
        "source": ("unattended_source", None),
        "after": ("unattended_after", ("poweroff", "reboot", "stay")),
    },
}


def _accepted(value: object, accepted: Any) -> bool:
    if not isinstance(value, str):
        return False
    if isinstance(accepted, re.Pattern):
        return bool(accepted.match(value))
    return accepted is None or value in accepted


def vendor_file() -> Path:
    """``$HOURGLASS_VENDOR_FILE`` when set (tests, a developer trying a vendor's look), else
    ``/etc/hourglass/vendor.toml``, which the appliance build writes."""
    return Path(os.environ.get(VENDOR_FILE_VARIABLE) or VENDOR_FILE)


def vendor_settings(path: Path | None = None) -> VendorSettings:
    """The vendor's settings from ``path`` (default: :func:`vendor_file`).

    The build has checked the file (``build/vendor.py``), so this reader only has to never
    stop the app or an unattended run: a missing file gives the defaults silently (a
    developer's machine); a file that cannot be read or is not TOML gives the defaults, and a
    key with a wrong value keeps that key's default, both with a warning in the log.
    """
    path = path if path is not None else vendor_file()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return VendorSettings()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        log.warning("vendor settings %s not used (%s): the defaults apply", path, e)
        return VendorSettings()
    values: dict[str, Any] = {}
    for table, keys in _VENDOR_KEYS.items():
        entries = data.get(table)
        if not isinstance(entries, dict):
            continue
        for key, (attribute, accepted) in keys.items():
            if key not in entries:
                continue
            if _accepted(entries[key], accepted):
                values[attribute] = entries[key]
            else:
                log.warning(
                    "vendor settings %s: %s.%s is not valid: the default applies", path, table, key
                )
    return VendorSettings(path=path, **values)
