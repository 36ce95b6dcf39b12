"""Mounting a partition with the driver :mod:`imaging.mounts.drivers` chooses, and the one
way Hourglass unmounts anything."""

from __future__ import annotations

import contextlib
import os
import shutil

from imaging.errors import Busy, HourglassError, ToolFailed, ToolMissing
from imaging.mounts.drivers import Mode, driver_for
from imaging.mounts.mountinfo import is_mounted
from imaging.process import run


def mount(device: str, fstype: str, mountpoint: str, mode: Mode) -> None:
    """Mount the block device ``device`` at ``mountpoint`` (created if needed, removed again
    when the mount fails)."""
    driver = driver_for(fstype, mode)
    if driver is None:
        raise ToolMissing(
            f"This system cannot mount {fstype} {mode.value} (no kernel or FUSE driver)."
        )
    os.makedirs(mountpoint, exist_ok=True)
    try:
        run(driver.argv(device, mountpoint))
    except HourglassError:
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)
        raise


def unmount(mountpoint: str, *, lazy: bool = False, remove: bool = False) -> None:
    """Unmount ``mountpoint``; nothing when nothing is mounted there.

    When the filesystem is in use, ``lazy`` detaches it now and lets the kernel finish when
    the last user is gone; without it that is :class:`Busy`. ``remove`` removes the
    mount point directory afterwards (where it is empty).
    """
    mountpoint = os.path.normpath(mountpoint)
    if is_mounted(mountpoint):
        result = run(["umount", mountpoint], check=False)
        if result.returncode != 0 and is_mounted(mountpoint):
            if lazy:
                with contextlib.suppress(HourglassError):
                    run(["umount", "-l", mountpoint], check=False)
            else:
                _refuse(mountpoint, result.returncode, result.stderr or b"")
    if remove:
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)


def detach_fuse(mountpoint: str) -> None:
    """Detach a FUSE filesystem now, whoever uses it (``fusermount -u -z``, the FUSE way, else
    ``umount -l``): for the file-level restore's own server, whose users are gone or must go."""
    if not is_mounted(mountpoint):
        return
    fusermount = "fusermount3" if shutil.which("fusermount3") else "fusermount"
    with contextlib.suppress(HourglassError):
        run([fusermount, "-u", "-z", mountpoint], check=False)
    if is_mounted(mountpoint):
        with contextlib.suppress(HourglassError):
            run(["umount", "-l", mountpoint], check=False)


def _refuse(mountpoint: str, code: int, stderr: bytes) -> None:
    lines = stderr.decode(errors="replace").strip().splitlines()
    said = lines[-1] if lines else ""
    if "busy" in said.lower() or not said:
        raise Busy(
            f"{mountpoint} is in use: a program has files open there or a shell is in it.",
            "Close them and run the command again.",
        )
    raise ToolFailed(f"umount {mountpoint} failed (exit code {code}): {said}")
