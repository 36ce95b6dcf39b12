"""Helpers for tests: loop devices, filesystems with real files, the CLI in-process."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from imaging.cli.main import main as cli_main

MiB = 1024 * 1024


def sh(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], check=check, capture_output=True, text=True)


@contextlib.contextmanager
def loop_device(image: Path, *, partscan: bool = False) -> Iterator[str]:
    """Attach ``image`` to a loop device; it is detached even when the test fails."""
    argv = ["losetup", "--show", "--find"] + (["--partscan"] if partscan else []) + [str(image)]
    device = sh(*argv).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


@contextlib.contextmanager
def mounted(device: str, mountpoint: Path, *options: str) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    argv = ["mount"] + (["-o", ",".join(options)] if options else []) + [device, str(mountpoint)]
    sh(*argv)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


def fill_with_files(root: Path, total: int, seed: int = 1) -> None:
    """Real files copied from this machine's /usr, up to ``total`` bytes. A file larger
    than what is left of ``total`` is passed over: which files /usr holds depends on what is
    installed, and one large binary (node, 99 MB) once made 36 MiB asked for 109 MiB, more
    than the test's filesystem held."""
    rng = random.Random(seed)
    candidates = [p for p in Path("/usr/lib/python3").rglob("*.py")] or [
        p for p in Path("/usr/share").rglob("*") if p.is_file()
    ]
    candidates += [p for p in Path("/usr/bin").iterdir() if p.is_file() and not p.is_symlink()]
    rng.shuffle(candidates)
    written = 0
    for i, src in enumerate(candidates):
        if written >= total:
            break
        try:
            if src.stat().st_size > total - written:
                continue
            data = src.read_bytes()
        except OSError:
            continue
        dest = root / f"d{i % 17}" / f"{i}-{src.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        written += len(data)


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every regular file under ``root``, by relative path."""
    result = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and "lost+found" not in path.parts:
            result[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def run_cli(*argv: str) -> int:
    return cli_main([str(a) for a in argv])


def hourglass_subprocess(
    *argv: str, env: dict[str, str] | None = None, **kw: object
) -> subprocess.Popen[bytes]:
    """The real `hourglass` command in a child process (for kills and exit codes)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "imaging.cli.main", *argv],
        env=full_env,
        **kw,  # type: ignore[arg-type]
    )


def same_file(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes, read 16 MiB at a time (GiB-sized images)."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(16 * MiB), fb.read(16 * MiB)
            if x != y:
                return False
            if not x:
                return True


def exfat_fuse_pid(mountpoint: str | Path) -> int | None:
    """The pid of the mount.exfat-fuse process serving ``mountpoint``; None if none does."""
    found = sh("pgrep", "-f", f"exfat.* {mountpoint}$", check=False).stdout.split()
    assert len(found) <= 1, f"mount.exfat-fuse of {mountpoint}: {found}"
    return int(found[0]) if found else None


def kill_exfat_fuse(mountpoint: str | Path) -> None:
    """SIGKILL the exfat-fuse daemon of ``mountpoint`` (a drive pulled out, as the kernel's
    FUSE client sees it) and wait until it is gone."""
    pid = exfat_fuse_pid(mountpoint)
    assert pid is not None, f"no mount.exfat-fuse serves {mountpoint}"
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        if not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.02)


def have(program: str) -> bool:
    return shutil.which(program) is not None


def write_random_image(path: Path, size: int, seed: int = 0, zero_every: int = 3) -> None:
    """An image of ``size`` bytes: compressible text, random data and zero blocks mixed."""
    rng = random.Random(seed)
    text = (
        Path("/usr/lib/python3.11/argparse.py").read_bytes()
        if Path("/usr/lib/python3.11/argparse.py").exists()
        else b"hourglass " * 10000
    )
    with open(path, "wb") as f:
        block = 0
        while f.tell() < size:
            n = min(4 * MiB, size - f.tell())
            kind = block % zero_every if zero_every else 1
            if kind == 0:
                f.write(bytes(n))
            elif kind == 1:
                f.write(rng.randbytes(n))
            else:
                f.write((text * (n // len(text) + 1))[:n])
            block += 1
