"""Issue 22, item 2, unattended: the backup drive's FUSE driver dies mid-backup. The one
result line says FAILED and that the drive was disconnected, and no mount is left."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from imaging.mounts import mountinfo
from imaging.repository.store import Repository
from imaging.unattended.run import RESULT, run_unattended
from tests.conftest import PASSPHRASE
from tests.recovery_ui.test_backup_flow import slow_disk  # noqa: F401 (a fixture)
from tests.support import exfat_fuse_pid, have, kill_exfat_fuse, loop_device, sh

# Never beside another of these (tests/conftest.py, xdist): a killed FUSE daemon's mount
# still names its loop partition until it is cleaned up, and discovery on the other worker
# then took a reused device of that name for mounted.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.xdist_group("dead-fuse"),
]


def kill_when_chunks_arrive(device: str, stop: threading.Event, killed: list[str]) -> None:
    """Kill the exfat-fuse process serving ``device`` once the backup stored chunks."""
    while not stop.is_set():
        for m in mountinfo.mounts():
            if m.source != device or not m.fstype.startswith("fuse"):
                continue
            chunks = Path(m.mountpoint) / "repo" / "chunks"
            stored = chunks.is_dir() and any(chunks.iterdir())
            if stored and exfat_fuse_pid(m.mountpoint) is not None:
                kill_exfat_fuse(m.mountpoint)
                killed.append(m.mountpoint)
                return
        time.sleep(0.02)


def test_the_result_line_names_the_lost_drive(
    tmp_path: Path,
    slow_disk: str,  # noqa: F811
) -> None:
    for tool in ("mkfs.exfat", "mount.exfat-fuse"):
        if not have(tool):
            pytest.skip(f"needs {tool}")
    image = tmp_path / "usb.img"
    sh("truncate", "-s", "300M", image)
    with loop_device(image) as drive:
        sh("mkfs.exfat", "-L", "HGLOST", drive)
        where = tmp_path / "fill"
        where.mkdir()
        sh("mount.exfat-fuse", drive, where)
        Repository.init(where / "repo", passphrase=PASSPHRASE)
        (where / "pass").write_text(PASSPHRASE + "\n")
        sh("umount", where)

        stop, killed = threading.Event(), []
        killer = threading.Thread(target=kill_when_chunks_arrive, args=(drive, stop, killed))
        killer.start()
        try:
            outcome = run_unattended(
                "hourglass.run=backup hourglass.repo=LABEL=HGLOST:/repo "
                f"hourglass.passphrase_file=LABEL=HGLOST:/pass hourglass.source={slow_disk}",
                say=lambda _: None,
            )
        finally:
            stop.set()
            killer.join()
        assert killed, outcome.line
        assert not outcome.ok
        assert outcome.line.startswith(f"{RESULT} FAILED The backup drive"), outcome.line
        assert "was disconnected" in outcome.line
        print(outcome.line)
        assert not [m for m in mountinfo.mounts() if m.source == drive], "a dead mount was left"
