"""The whole PC as of a second, end to end in QEMU, with the agent from its Debian package.

A real Debian 12 host disk with `hourglass-agent_<version>_all.deb` installed (dpkg, as a
person would) and its agent enabled, protecting /srv/data into a repository on the host's
backup drive. The appliance images the host once (the baseline). The host then runs: at
known seconds a file is changed twice, one is created and one deleted, and the VM is
killed (no clean shutdown). The host disk is wiped, and the appliance restores it "as of" a
second between the two changes: the image, then the agent's journal replayed up to that
second. The host boots, and its files are exactly those of that second: neither earlier
nor later."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from build import deb
from build.context import Context
from build.qemu import Drive, Machine, run_until_exit
from tests.build.test_deb import build as build_package
from tests.e2e.hostdisk import (
    PACKAGES,
    fsck_clean,
    make_host_disk,
    partition_mounted,
    read_files,
    wipe,
)
from tests.e2e.lab import PASSPHRASE_FILE, REPO, appliance_machine, make_backup_drive
from tests.e2e.lab import result_lines as results_of

pytestmark = [pytest.mark.e2e, pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]

HOST_MIB = 2048
# What the package needs from Debian, in the host's root beside its base packages.
AGENT_PACKAGES = tuple(sorted({d.split()[0] for d in deb.DEPENDS}))
NOTES, NEW, OLD = "/srv/data/notes.txt", "/srv/data/new.txt", "/srv/data/old.txt"
V0 = {NOTES: b"notes: as imaged\n", OLD: b"a file deleted later\n"}
AGENT_TOML = """\
[repository]
location = "/mnt/backup/repo"
passphrase_file = "/mnt/backup/passphrase"

[protect]
paths = ["/srv/data"]
"""
# The host's boot script: the first boot after /etc/e2e-writer appears (and before
# /srv/data/.written) writes at known seconds, says when on the serial port, and waits to be
# killed; any other boot says HOST-BOOTED and powers off (tests/e2e/hostdisk.py).
WRITER = """\
#!/bin/sh
say() { printf '\\r\\n%s\\r\\n' "$*" > /dev/ttyS0; }
if [ -e /etc/e2e-writer ] && [ ! -e /srv/data/.written ]; then
    for i in $(seq 180); do
        hourglass agent status --json 2>/dev/null | grep -q '"running": true' && break
        sleep 1
    done
    say "AGENT-UP $(hourglass agent status 2>&1 | head -n 3 | tr '\\n' ' ')"
    touch /srv/data/.written
    sleep 6
    printf 'notes: first change\\n' > /srv/data/notes.txt
    say "WROTE first $(date +%s)"
    sleep 5
    printf 'notes: second change\\n' > /srv/data/notes.txt
    printf 'created at the second change\\n' > /srv/data/new.txt
    rm /srv/data/old.txt
    say "WROTE second $(date +%s)"
    sleep 15
    say "WRITER-DONE"
    sleep 3600
fi
size=$(df -B1 --output=size / | tail -n 1 | tr -d ' ')
say "HOST-BOOTED $(cat /etc/e2e-token) rootsize=$size"
systemctl --no-block poweroff
"""


def install_agent(host: Path, package: Path, work: Path) -> None:
    """dpkg -i of the package in the host's root, its configuration, the unit enabled, the
    backup drive in fstab, and the writer."""
    with partition_mounted(host, 3, work / "host.mnt") as root:
        mounts = []
        try:
            for kind, where in (("proc", "proc"), ("sysfs", "sys")):
                subprocess.run(["mount", "-t", kind, kind, root / where], check=True)
                mounts.append(root / where)
            shutil.copyfile(package, root / "tmp" / package.name)
            env = [
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "DEBIAN_FRONTEND=noninteractive",
            ]
            out = subprocess.run(
                ["chroot", str(root), *env, "dpkg", "-i", f"/tmp/{package.name}"],
                capture_output=True,
                text=True,
            )
            assert out.returncode == 0, out.stdout + out.stderr
        finally:
            for where in reversed(mounts):
                subprocess.run(["umount", str(where)], check=False)
        (root / "tmp" / package.name).unlink()
        (root / "etc" / "hourglass" / "agent.toml").write_text(AGENT_TOML)
        wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants"
        (wants / "hourglass-agent.service").symlink_to(
            "/lib/systemd/system/hourglass-agent.service"
        )
        (root / "mnt" / "backup").mkdir(parents=True, exist_ok=True)
        with (root / "etc" / "fstab").open("a") as fstab:
            fstab.write("LABEL=HGBACKUP /mnt/backup ext4 defaults,nofail 0 2\n")
        (root / "usr" / "local" / "sbin" / "host-booted").write_text(WRITER)
        (root / "etc" / "e2e-writer").write_text("")


def wrote(serial: bytes) -> dict[str, int]:
    """The seconds the writer said it wrote at (Unix time)."""
    found = dict(re.findall(rb"WROTE (\w+) (\d+)", serial))
    return {k.decode(): int(v) for k, v in found.items()}


def test_the_whole_pc_as_of_a_second(
    appliance: Context, tmp_path: Path, results: dict[str, object]
) -> None:
    def timed(phase: str, started: float) -> None:
        results[f"e2e_seconds.as_of_{phase}"] = round(time.monotonic() - started)

    started = time.monotonic()
    package = build_package(tmp_path / "deb")
    host, backup = tmp_path / "host.img", tmp_path / "backup.img"
    token = secrets.token_hex(8)
    assert set(AGENT_PACKAGES) <= set(PACKAGES), "the host's root lacks what the package needs"
    make_host_disk(host, HOST_MIB, token, V0)
    install_agent(host, package, tmp_path)
    make_backup_drive(backup, tmp_path)
    timed("1_make_disks", started)

    # The baseline image, by the appliance.
    started = time.monotonic()
    run = run_until_exit(
        appliance_machine(
            appliance,
            [host, backup],
            {"run": "backup", "repo": REPO, "passphrase_file": PASSPHRASE_FILE},
        ),
        tmp_path / "backup",
    )
    lines = results_of(run.serial)
    assert len(lines) == 1 and lines[0].startswith("HOURGLASS-RESULT: OK backup"), lines
    timed("2_baseline_image", started)

    # The host runs with its agent; files change at known seconds; then the power goes.
    started = time.monotonic()
    machine = Machine(
        "bios", [Drive(host, boot=True), Drive(backup)], network=False, memory_mib=1536
    )
    run = run_until_exit(
        machine, tmp_path / "running", timeout=1200, pull_plug=lambda text: b"WRITER-DONE" in text
    )
    console = run.serial.decode(errors="replace")
    assert run.pulled, f"the host did not run its writes:\n{console[-3000:]}"
    seconds = wrote(run.serial)
    assert set(seconds) == {"first", "second"}, console[-3000:]
    assert seconds["second"] - seconds["first"] >= 4
    timed("3_host_runs", started)

    # The disk dies; the appliance restores the PC as of a second between the changes.
    wipe(host)
    between = seconds["first"] + 2
    when = datetime.fromtimestamp(between, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    started = time.monotonic()
    run = run_until_exit(
        appliance_machine(
            appliance,
            [host, backup],
            {"run": "restore", "repo": REPO, "passphrase_file": PASSPHRASE_FILE, "snapshot": when},
        ),
        tmp_path / "restore",
    )
    lines = results_of(run.serial)
    assert len(lines) == 1 and lines[0].startswith("HOURGLASS-RESULT: OK restore"), lines
    assert "verified" in lines[0] and "replayed the file journal" in lines[0].lower(), lines[0]
    timed("4_restore_as_of", started)

    # Exactly the files of that second.
    fsck_clean(host)
    assert read_files(host, [NOTES, NEW, OLD]) == {
        NOTES: b"notes: first change\n",
        NEW: b"",  # created after that second: absent
        OLD: V0[OLD],  # deleted after that second: still there
    }
    started = time.monotonic()
    booted = run_until_exit(
        Machine("bios", [Drive(host, boot=True)], network=False, memory_mib=1024), tmp_path / "boot"
    )
    assert f"HOST-BOOTED {token}".encode() in booted.serial, booted.serial[-3000:]
    timed("5_restored_boots", started)
    print(f"\nas of {when} (first change at {seconds['first']}, second at {seconds['second']}):")
    print(f"  {lines[0]}")
