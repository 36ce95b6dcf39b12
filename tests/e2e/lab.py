"""The appliance booted from its ISO with unattended orders, for the end-to-end and
power-loss tests."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

from build.context import Context
from build.qemu import DirectKernel, Drive, Machine
from tests.e2e.hostdisk import attached, mounted, partition_mounted, sh

APPEND = "boot=live quiet loglevel=3 console=tty0 console=ttyS0,115200n8"
HOURGLASS = Path(sys.executable).parent / "hourglass"
BACKUP_LABEL = "HGBACKUP"
REPO = f"LABEL={BACKUP_LABEL}:/repo"
PASSPHRASE_FILE = f"LABEL={BACKUP_LABEL}:/passphrase"


def appliance_machine(appliance: Context, disks: list[Path], orders: dict[str, str]) -> Machine:
    """BIOS, the ISO as a CD, ``disks`` as virtio disks; the kernel and initrd of the ISO
    booted directly so that ``orders`` (hourglass.KEY=VALUE) reach the kernel command line.
    The orders end with a power-off unless they say otherwise."""
    orders = {"after": "poweroff", **orders}
    params = " ".join(f"hourglass.{k}={v}" for k, v in orders.items())
    return Machine(
        "bios",
        [Drive(appliance.iso, "cdrom"), *(Drive(d) for d in disks)],
        network=False,
        direct=DirectKernel(appliance.kernel, appliance.initrd, f"{APPEND} {params}"),
    )


def result_lines(serial: bytes) -> list[str]:
    """The HOURGLASS-RESULT lines on the serial console."""
    text = serial.decode(errors="replace").replace("\r", "\n")
    return [m.group(0).strip() for m in re.finditer(r"HOURGLASS-RESULT: [^\n]*", text)]


def hourglass(*argv: str | Path) -> str:
    """The CLI of this checkout on the machine running the tests."""
    result = subprocess.run([str(HOURGLASS), *map(str, argv)], capture_output=True, text=True)
    assert result.returncode == 0, f"hourglass {argv[0]}: {result.stderr}"
    return result.stdout


def make_backup_drive(image: Path, scratch: Path, size_gib: int = 3) -> None:
    """A backup drive: GPT, one ext4 partition labelled HGBACKUP holding an encrypted
    repository /repo and its passphrase in /passphrase (0600), as a lab would set it up."""
    with image.open("wb") as f:
        f.truncate(size_gib << 30)
    sh("sgdisk", "--new=1:1MiB:0", "--typecode=1:8300", image)
    with attached(image) as device:
        sh("mkfs.ext4", "-q", "-L", BACKUP_LABEL, f"{device}p1")
        with mounted(f"{device}p1", scratch / "backup.mnt") as root:
            passphrase = root / "passphrase"
            passphrase.write_text(secrets.token_urlsafe(24) + "\n")
            passphrase.chmod(0o600)
            hourglass("init", root / "repo", "--passphrase-file", passphrase)


def repo_snapshots(image: Path, scratch: Path) -> list[dict[str, object]]:
    """``hourglass snapshots --json`` of the backup drive's repository, oldest first."""
    with partition_mounted(image, 1, scratch / "backup.mnt", "-o", "ro") as root:
        out = hourglass(
            "snapshots", "--repo", root / "repo", "--passphrase-file", root / "passphrase", "--json"
        )
    snapshots: list[dict[str, object]] = json.loads(out)
    return sorted(snapshots, key=lambda s: str(s["time"]))
