"""Errors of the appliance build, each with a message a person can act on."""

from __future__ import annotations

from imaging.errors import HourglassError


class BuildError(HourglassError):
    """The appliance could not be built; nothing half-built was left in ``dist/``."""

    exit_code = 20


class NotRoot(BuildError):
    exit_code = 21


class MirrorUnreachable(BuildError):
    exit_code = 22


class VendorError(BuildError):
    """The vendor file is wrong; the message names the file, the line and the key."""

    exit_code = 23

    def __init__(self, path: str, line: int | None, key: str | None, problem: str) -> None:
        where = f"{path}, line {line}" if line else path
        what = f" (key {key!r})" if key else ""
        super().__init__(f"{where}{what}: {problem}", "See image/vendor.toml for every key.")
        self.path = path
        self.line = line
        self.key = key


class ImageTooLarge(BuildError):
    exit_code = 24


class BootFailed(BuildError):
    """A QEMU boot did not reach HOURGLASS-READY (used by `make run` and the boot tests)."""

    exit_code = 25
