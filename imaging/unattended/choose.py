"""Which disk an unattended run works on. It never guesses: two candidates are an error."""

from __future__ import annotations

import os

from imaging.disks.model import Disk
from imaging.errors import NotFound, UsageError


def is_internal(disk: Disk) -> bool:
    """A disk built into the machine: not USB, not removable, not a loop device."""
    return not disk.removable and disk.transport not in ("usb", "loop")


def _matches(disk: Disk, wanted: str) -> bool:
    if wanted == disk.serial:
        return True
    if wanted.startswith("/"):
        real = os.path.realpath(wanted)
        return real == os.path.realpath(disk.device) or wanted in (disk.device, disk.by_id)
    return False


def choose_disk(disks: list[Disk], wanted: str, *, role: str, exclude: set[str]) -> Disk:
    """The disk named by ``wanted`` (device, by-id path or serial), or the only candidate.

    ``role`` is "source" or "target" (it names the kernel parameter in messages);
    ``exclude`` holds devices that must never be chosen (the repository's drive).
    """
    if wanted:
        found = [d for d in disks if _matches(d, wanted)]
        if not found:
            seen = ", ".join(f"{d.device} ({d.title()})" for d in disks) or "none"
            raise NotFound(f"hourglass.{role}={wanted}: no such disk. Disks seen: {seen}.")
        disk = found[0]
        if disk.device in exclude:
            raise UsageError(f"hourglass.{role}={wanted} is the disk that holds the repository.")
        if disk.is_boot_disk:
            raise UsageError(f"hourglass.{role}={wanted} is the disk Hourglass booted from.")
        return disk
    candidates = [
        d for d in disks if is_internal(d) and not d.is_boot_disk and d.device not in exclude
    ]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        seen = ", ".join(f"{d.device} ({d.title()}, {d.transport})" for d in disks) or "none"
        raise NotFound(
            f"No internal disk to use as the {role}. Disks seen: {seen}.",
            f"Name one with hourglass.{role}=.",
        )
    names = ", ".join(f"{d.device} ({d.title()})" for d in candidates)
    raise UsageError(
        f"More than one internal disk could be the {role}: {names}. I will not guess.",
        f"Name one with hourglass.{role}= (a device path, /dev/disk/by-id/... or a serial).",
    )
