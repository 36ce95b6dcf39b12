"""A process holding a passphrase never leaves a core file (issue 14, item 12).

The real `hourglass` command reads its passphrase from a fifo the test holds open, so it is
stopped in the middle of reading with the passphrase in its memory; then it is crashed with
SIGSEGV or SIGABRT under ``ulimit -c unlimited``. A control child without the protection
crashes the same way first, to prove this machine writes core files at all.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

import imaging
from imaging import coredumps
from imaging.repository.store import Repository
from tests.conftest import PASSPHRASE

pytestmark = pytest.mark.faults

WORKTREE = str(Path(imaging.__file__).resolve().parents[1])
PATTERN = Path("/proc/sys/kernel/core_pattern").read_text().strip()


def _child(argv: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    """``argv`` run by Python under ``ulimit -c unlimited`` (the shell execs it: same pid)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
    return subprocess.Popen(
        ["bash", "-c", 'ulimit -c unlimited && exec "$@"', "bash", sys.executable, *argv],
        cwd=cwd,
        env={**env, "PYTHONPATH": WORKTREE},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _cores(where: Path) -> list[Path]:
    prefix = PATTERN.split("%", 1)[0]
    return [p for p in where.iterdir() if p.name.startswith(prefix)]


def _open_writer(fifo: Path, child: subprocess.Popen[bytes]) -> int:
    """The write end of ``fifo`` once the child has opened it to read."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            assert child.poll() is None, "the child exited before reading its passphrase"
            assert time.monotonic() < deadline, "the child never opened the passphrase file"
            time.sleep(0.05)


def _wait_drained(fd: int) -> None:
    deadline = time.monotonic() + 30
    buf = bytearray(4)
    while fcntl.ioctl(fd, termios.FIONREAD, buf) == 0 and int.from_bytes(buf, "little"):
        assert time.monotonic() < deadline, "the child did not read its passphrase"
        time.sleep(0.05)
    time.sleep(0.3)  # its read returned: the passphrase is in its memory, it waits for EOF


@pytest.mark.skipif(
    PATTERN.startswith("|") or "/" in PATTERN,
    reason=f"core_pattern {PATTERN!r} does not write a core file into the working directory",
)
@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGABRT], ids=["SIGSEGV", "SIGABRT"])
def test_a_crash_after_the_passphrase_is_read_leaves_no_core(
    tmp_path: Path, sig: signal.Signals
) -> None:
    control_dir = tmp_path / "control"
    control_dir.mkdir()
    control = _child(
        ["-c", f"import os; s = 'x' * 100; os.kill(os.getpid(), {int(sig)})"], control_dir
    )
    assert control.wait(timeout=60) == -sig
    if not _cores(control_dir):
        pytest.skip("this machine writes no core files (ulimit -c unlimited had no effect)")

    repo = tmp_path / "repo"
    Repository.init(repo, passphrase=PASSPHRASE)
    fifo = tmp_path / "passphrase"
    os.mkfifo(fifo)
    crash_dir = tmp_path / "crash"
    crash_dir.mkdir()
    child = _child(
        [
            "-m",
            "imaging.cli.main",
            "snapshots",
            "--repo",
            str(repo),
            "--passphrase-file",
            str(fifo),
        ],
        crash_dir,
    )
    try:
        fd = _open_writer(fifo, child)
        try:
            os.write(fd, PASSPHRASE.encode() + b"\n")
            _wait_drained(fd)
            limits = Path(f"/proc/{child.pid}/limits").read_text()
            child.send_signal(sig)
            assert child.wait(timeout=60) == -sig
        finally:
            os.close(fd)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    cores = _cores(crash_dir)
    leaks = {p.name: p.read_bytes().count(PASSPHRASE.encode()) for p in cores}
    assert not cores, f"core files written, passphrase copies in each: {leaks}"
    core_line = next(line for line in limits.splitlines() if line.startswith("Max core"))
    assert core_line.split()[4] == "0", core_line  # the soft limit; dumpable 0 did the rest
    assert not coredumps.dumpable()  # and this process, which made the repository's key
