"""Rebooting, powering off and a shell: what the appliance offers besides imaging.

Reboot and power-off act only on the appliance: the same app started on someone's
workstation must never turn the workstation off.
"""

from __future__ import annotations

import os
import shutil

from imaging.appliance.vendor import in_appliance
from imaging.errors import UsageError
from imaging.process import run


def _refuse_outside(what: str) -> None:
    if not in_appliance():
        raise UsageError(
            f"{what} is only done on the Hourglass appliance.",
            "This computer is not running the appliance; use its own commands.",
        )


def _power(action: str) -> None:
    if shutil.which("systemctl"):
        run(["systemctl", action])
    else:
        run([action])


def reboot() -> None:
    """Restart the machine (the appliance only)."""
    _refuse_outside("Restarting the computer")
    os.sync()
    _power("reboot")


def poweroff() -> None:
    """Turn the machine off (the appliance only)."""
    _refuse_outside("Turning the computer off")
    os.sync()
    _power("poweroff")


def shell_argv() -> list[str]:
    """The interactive shell to offer: ``$SHELL``, else bash, else sh."""
    for candidate in (os.environ.get("SHELL", ""), "/bin/bash", "/bin/sh"):
        if candidate and os.access(candidate, os.X_OK):
            return [candidate, "-i"]
    return ["sh", "-i"]


def run_shell() -> int:
    """Run an interactive shell on this terminal until it exits; returns its exit code.

    The shell's environment carries no secrets (:func:`imaging.process.child_environment`).
    """
    return run(shell_argv(), capture=False, check=False).returncode
