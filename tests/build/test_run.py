"""`make run`: the appliance boots in QEMU with its serial console in the terminal, the app
draws there and takes keys, and Ctrl-a x ends QEMU."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import time

import pytest

from build.context import REPOSITORY, Context
from build.demo import BACKUP_MIB, demo_dir

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-B]")


def read_until(fd: int, pattern: bytes, seen: bytearray, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                return False
            if pattern in ESCAPES.sub(b"", bytes(seen)):
                return True
    return False


def test_run_boots_the_app_on_this_terminal(appliance: Context, results: dict[str, object]) -> None:
    import fcntl
    import termios

    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "build", "run"],
        cwd=REPOSITORY, stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True,
        start_new_session=True,  # its own process group: QEMU goes with it on failure
    )  # fmt: skip
    os.close(secondary)
    seen = bytearray()
    try:
        assert read_until(primary, b"Quit QEMU: Ctrl-a x", seen, 120), bytes(seen)[-2000:]
        # The app on ttyS0 draws its header, its actions and its key bindings here.
        assert read_until(primary, b"Recovery", seen, 600), bytes(seen)[-2000:]
        assert read_until(primary, b"Restore system", seen, 60), bytes(seen)[-2000:]
        assert read_until(primary, b"Look for disks again", seen, 60), bytes(seen)[-2000:]
        results["make_run_seconds_to_app"] = round(time.monotonic() - started)
        # READY comes from the app on tty1 (the serial one announces in the kernel log only,
        # not into its own screen); it may start after the serial one.
        assert read_until(primary, b"HOURGLASS-READY", seen, 180), bytes(seen)[-2000:]
        # The serial console was sized from this terminal (100x30, one row kept for QEMU's
        # output): Textual draws down to row 29, not 24 as on an unsized serial line.
        rows = [int(m) for m in re.findall(rb"\x1b\[(\d+);\d+H", bytes(seen))]
        assert rows and max(rows) == 29, sorted(set(rows))
        os.write(primary, b"\x01x")  # Ctrl-a x: QEMU quits
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        os.close(primary)
    assert (demo_dir(appliance) / "demo-pc.img").stat().st_size > 0
    assert (demo_dir(appliance) / "backup.img").stat().st_size == BACKUP_MIB * 2**20
