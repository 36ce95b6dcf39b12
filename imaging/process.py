"""The one way Hourglass runs an external program.

argv is always a list, never a shell string. The exit code is checked; a failure names the
command line and its exit code, and a missing program is named plainly. Children never see
the passphrase in their environment, and a PyInstaller-frozen binary's ``LD_LIBRARY_PATH``
is restored before system tools run (Borg does the same).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import IO

from imaging.errors import ToolFailed, ToolMissing

SECRET_VARIABLES = ("HOURGLASS_PASSPHRASE",)

# Debian package that provides each program, for the "not found" message.
PACKAGES = {
    "partclone.ext4": "partclone",
    "partclone.xfs": "partclone",
    "partclone.btrfs": "partclone",
    "partclone.vfat": "partclone",
    "partclone.fat": "partclone",
    "partclone.exfat": "partclone",
    "partclone.ntfs": "partclone",
    "mkfs.ext4": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "resize2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "xfs_growfs": "xfsprogs",
    "xfs_repair": "xfsprogs",
    "btrfs": "btrfs-progs",
    "ntfsresize": "ntfs-3g",
    "ntfs-3g": "ntfs-3g",
    "losetup": "mount",
    "mount": "mount",
    "umount": "mount",
    "blkid": "util-linux",
    "blockdev": "util-linux",
    "partprobe": "parted",
    "sgdisk": "gdisk",
    "mmdebstrap": "mmdebstrap",
    "xorriso": "xorriso",
    "mksquashfs": "squashfs-tools",
    "qemu-system-x86_64": "qemu-system-x86",
    "nbdkit": "nbdkit",
    "exfatfsck": "exfatprogs",
    "fsck.exfat": "exfatprogs",
    "fsck.vfat": "dosfstools",
    "fusefat": "fusefat",
    "mount.exfat-fuse": "exfat-fuse",
    # the appliance build (build/)
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "mdir": "mtools",
    "grub-mkimage": "grub-common",
    "wipefs": "util-linux",
    "partx": "util-linux",
    "lsblk": "util-linux",
    "chroot": "coreutils",
    "tar": "tar",
    "mkfs.exfat": "exfatprogs",
}


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: no secrets, the system's library path."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES}
    if getattr(sys, "frozen", False):
        original = env.pop("LD_LIBRARY_PATH_ORIG", None)
        if original is not None:
            env["LD_LIBRARY_PATH"] = original
        else:
            env.pop("LD_LIBRARY_PATH", None)
    if extra:
        env.update(extra)
    return env


def which(program: str) -> str:
    """Full path of ``program``, or :class:`ToolMissing` naming the Debian package."""
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        package = PACKAGES.get(program)
        hint = f"Install it with: apt install {package}" if package else None
        raise ToolMissing(f"{program} not found.", hint)
    return path


Argv = Sequence["str | os.PathLike[str]"]


def _text(arg: object) -> str:
    """An argument as text: paths by their file system name, anything else by str()."""
    return os.fspath(arg) if isinstance(arg, os.PathLike) else str(arg)


def run(
    argv: Argv,
    *,
    check: bool = True,
    capture: bool = True,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv``; raise :class:`ToolFailed` with the command line when it fails."""
    args = [_text(a) for a in argv]
    args[0] = which(args[0]) if "/" not in args[0] else args[0]
    try:
        result = subprocess.run(
            args,
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            env=child_environment(env),
            timeout=timeout,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as e:
        raise ToolMissing(f"{args[0]} not found.") from e
    if check and result.returncode != 0:
        raise ToolFailed(failure_message(args, result.returncode, result.stderr))
    return result


def failure_message(argv: Sequence[str], returncode: int, stderr: bytes | None) -> str:
    detail = (stderr or b"").decode(errors="replace").strip().splitlines()
    last = f": {detail[-1]}" if detail else ""
    return f"{shlex.join(argv)} failed with exit code {returncode}{last}"


def spawn(
    argv: Argv,
    *,
    stdin: int | IO[bytes] | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` without waiting (for pipelines and long-running helpers)."""
    args = [_text(a) for a in argv]
    args[0] = which(args[0]) if "/" not in args[0] else args[0]
    return subprocess.Popen(
        args, stdin=stdin, stdout=stdout, stderr=stderr, env=child_environment(env)
    )
