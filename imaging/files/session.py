"""A FUSE server with the loop devices and mounts on top of it, recorded so nothing leaks.

A :class:`Session` starts one server process (:mod:`imaging.files.server`), then mounts any
number of (snapshot, image) views read-only. Everything it creates is recorded in
``/run/hourglass/mounts/<session>/state.json`` before it is created, so that:

- ``hourglass umount DIR`` finds what a persistent ``hourglass mount`` left running;
- a session whose server or owning process was killed is torn down by the next session
  (:func:`cleanup_stale`): lazy unmounts, loop devices detached, FUSE unmounted;
- a temporary session's server notices the death of its parent (end of its stdin) and tears
  down at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from imaging.errors import Busy, HourglassError, ToolFailed, UsageError
from imaging.files.blockview import DEFAULT_CACHE_BYTES, Damage
from imaging.files.keypipe import write_master
from imaging.mounts import drivers
from imaging.mounts.drivers import Mode
from imaging.mounts.mount import detach_fuse, unmount
from imaging.mounts.mountinfo import is_mounted, mount_points, mounts_of_source
from imaging.process import run, spawn
from imaging.repository.store import Repository, Snapshot

RUN_DIR = Path("/run/hourglass/mounts")
READY_TIMEOUT = 20.0


# --- processes and mounts of this machine ---------------------------------------------------


def start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (tells a reused pid apart)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()[19]


def alive(pid: int | None, started: str | None) -> bool:
    """Is ``pid`` still the process that started at ``started`` (a zombie is not alive)?"""
    if pid is None:
        return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X") and fields[19] == started


def _quiet(argv: list[str]) -> None:
    with contextlib.suppress(HourglassError):
        run(argv, check=False)


def loop_backing(loop: str) -> str | None:
    name = os.path.basename(loop)
    try:
        return Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
    except OSError:
        return None


# --- the recorded state ---------------------------------------------------------------------


@dataclass
class MountRecord:
    """One filesystem this session mounted (or is about to)."""

    mountpoint: str
    view: str
    loop: str | None = None
    driver: str = ""
    snapshot: str = ""
    image: str = ""


@dataclass
class State:
    directory: Path
    fuse_dir: str
    repo: str
    persistent: bool
    server_pid: int | None = None
    server_start: str | None = None
    owner_pid: int | None = None
    owner_start: str | None = None
    mounts: list[MountRecord] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.directory / "state.json"

    def save(self) -> None:
        record = {k: v for k, v in self.__dict__.items() if k not in ("directory", "mounts")}
        record["mounts"] = [m.__dict__ for m in self.mounts]
        tmp = self.directory / "state.json.tmp"
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, path: Path) -> State:
        record: dict[str, Any] = json.loads(path.read_text())
        mounts = [MountRecord(**m) for m in record.pop("mounts", [])]
        return cls(directory=path.parent, mounts=mounts, **record)

    def stale(self) -> bool:
        if not alive(self.server_pid, self.server_start):
            return True
        return not self.persistent and not alive(self.owner_pid, self.owner_start)


def serves(loop: str | None, view: str) -> bool:
    """Does ``loop`` still serve ``view`` (loop numbers are reused)? Once the FUSE directory
    is detached, the kernel names the backing file relative to it: ``/<snapshot>.<image>``."""
    backing = loop_backing(loop) if loop else None
    return backing is not None and backing in (view, "/" + os.path.basename(view))


def detach_loop(loop: str | None, view: str) -> None:
    """Detach ``loop`` if it still serves ``view``."""
    if loop and serves(loop, view):
        _quiet(["losetup", "-d", loop])


def teardown_recorded(path: Path, *, unmount_server: bool = True) -> None:
    """Undo everything the state file at ``path`` records; safe to run more than once."""
    try:
        state = State.load(path)
    except (OSError, ValueError, TypeError):
        return
    for record in reversed(state.mounts):
        unmount(record.mountpoint, lazy=True)
        if record.loop and serves(record.loop, record.view):
            for elsewhere in mounts_of_source(record.loop):  # the mount point was moved or renamed
                unmount(elsewhere, lazy=True)
        detach_loop(record.loop, record.view)
        if Path(record.mountpoint).parent == state.directory:
            with contextlib.suppress(OSError):
                os.rmdir(record.mountpoint)
    if not unmount_server:
        return
    detach_fuse(state.fuse_dir)
    if alive(state.server_pid, state.server_start):
        assert state.server_pid is not None
        with contextlib.suppress(OSError):
            os.kill(state.server_pid, signal.SIGTERM)
    _remove_directory(state.directory)


def _remove_directory(directory: Path) -> None:
    """Remove a session directory, never descending into anything still mounted."""
    mounted = mount_points()
    for entry in sorted(directory.iterdir(), reverse=True) if directory.exists() else []:
        if str(entry) in mounted:
            return
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                os.rmdir(entry)
            else:
                entry.unlink()
    with contextlib.suppress(OSError):
        os.rmdir(directory)


def sessions() -> list[State]:
    result = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(RUN_DIR.iterdir()):
            with contextlib.suppress(OSError, ValueError, TypeError):
                result.append(State.load(entry / "state.json"))
    return result


def cleanup_stale() -> list[str]:
    """Tear down sessions whose server or owner is gone; returns their mount points."""
    cleaned = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(RUN_DIR.iterdir()):
            path = entry / "state.json"
            try:
                state = State.load(path)
            except FileNotFoundError:
                if time.time() - entry.stat().st_mtime > 60:  # a session that never started
                    _remove_directory(entry)
                continue
            except (OSError, ValueError, TypeError):
                continue
            if state.stale():
                teardown_recorded(path)
                cleaned += [m.mountpoint for m in state.mounts]
    return cleaned


# --- a session ------------------------------------------------------------------------------


@dataclass
class Mounted:
    """A filesystem of one image of one snapshot, mounted read-only."""

    snapshot: Snapshot
    image: str
    fstype: str
    path: Path
    record: MountRecord


def server_argv() -> list[str]:
    if getattr(sys, "frozen", False):  # PyInstaller: the binary is `hourglass` itself
        return [sys.executable, "files", "_serve", "--"]
    return [sys.executable, "-m", "imaging.files.server"]


def describe_image(snapshot: Snapshot, image: str) -> str:
    number = snapshot.image(image).number
    what = f"partition {number} ({image})" if number else f"image {image}"
    return f"{what} of snapshot {snapshot.id[:12]} ({snapshot.time.strftime('%Y-%m-%d %H:%M:%S')})"


class Session:
    """One FUSE server and the read-only mounts on top of it."""

    def __init__(
        self, repo: Repository, *, persistent: bool = False, cache_bytes: int = DEFAULT_CACHE_BYTES
    ) -> None:
        self.repo = repo
        self.persistent = persistent
        self.cache_bytes = cache_bytes
        self.state: State | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._count = 0

    def __enter__(self) -> Session:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def fuse_dir(self) -> Path:
        assert self.state is not None
        return Path(self.state.fuse_dir)

    def start(self) -> None:
        """Clean up stale sessions, then start the server and wait until it serves."""
        cleanup_stale()
        RUN_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory = RUN_DIR / secrets.token_hex(6)
        directory.mkdir(mode=0o700)
        (directory / "fuse").mkdir()
        state = State(
            directory=directory,
            fuse_dir=str(directory / "fuse"),
            repo=str(self.repo.path),
            persistent=self.persistent,
            owner_pid=None if self.persistent else os.getpid(),
            owner_start=None if self.persistent else start_time(os.getpid()),
        )
        self.state = state
        argv = [
            *server_argv(),
            "--repo",
            str(self.repo.path.absolute()),
            "--mountpoint",
            state.fuse_dir,
            "--damage-log",
            str(directory / "damage.log"),
            "--cache-bytes",
            str(self.cache_bytes),
        ]
        if not self.persistent:
            argv += ["--state", str(state.path), "--watch-stdin"]
        log = os.open(directory / "server.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            server = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        finally:
            os.close(log)
        self._server = server
        state.server_pid = server.pid
        state.server_start = start_time(server.pid)
        state.save()
        assert server.stdin is not None
        try:
            write_master(server.stdin, self.repo.keys.master)
            if self.persistent:
                server.stdin.close()
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        assert self._server is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while not is_mounted(self.fuse_dir):
            if self._server.poll() is not None:
                raise ToolFailed(
                    "The block view server stopped before it served anything: "
                    + self.server_log_tail()
                )
            if time.monotonic() > deadline:
                raise ToolFailed(
                    f"The block view server did not start within {READY_TIMEOUT:.0f} s."
                )
            time.sleep(0.01)

    def server_log_tail(self) -> str:
        assert self.state is not None
        try:
            lines = (self.state.directory / "server.log").read_text().strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "no log"

    def view(self, snapshot: Snapshot, image: str) -> Path:
        """The read-only file holding ``image`` of ``snapshot``."""
        snapshot.image(image)  # SnapshotNotFound for an unknown image
        path = self.fuse_dir / f"{snapshot.id}.{image}"
        if not path.exists():
            raise HourglassError(
                f"The block view of {describe_image(snapshot, image)} cannot be opened: "
                + self.server_log_tail()
            )
        return path

    def fstype(self, snapshot: Snapshot, image: str) -> str | None:
        """The filesystem of ``image``: from the manifest, else what blkid finds."""
        recorded = snapshot.image(image).fstype
        if recorded:
            return drivers.normalize(recorded)
        return drivers.detect(str(self.view(snapshot, image)))

    def mount(self, snapshot: Snapshot, image: str, mountpoint: Path | None = None) -> Mounted:
        """Mount ``image`` of ``snapshot`` read-only (a fresh directory unless ``mountpoint``)."""
        assert self.state is not None
        what = describe_image(snapshot, image)
        view = self.view(snapshot, image)
        fstype = self.fstype(snapshot, image)
        if fstype is None:
            raise UsageError(f"No filesystem was found on {what}.")
        if fstype in drivers.NOT_FILESYSTEMS:
            raise UsageError(f"{what} holds {fstype}, not a filesystem that can be browsed.")
        driver = drivers.driver_for(fstype, Mode.READ_ONLY)
        if driver is None:
            raise UsageError(f"{what} holds {fstype}, which this system cannot mount.")
        if fstype == "btrfs":
            _check_btrfs_copy(view, what)
        if mountpoint is None:
            self._count += 1
            mountpoint = self.state.directory / f"mnt{self._count}"
            mountpoint.mkdir()
        record = MountRecord(
            mountpoint=str(mountpoint),
            view=str(view),
            driver=driver.describe(),
            snapshot=snapshot.id,
            image=image,
        )
        self.state.mounts.append(record)
        self.state.save()
        try:
            device = str(view)
            if driver.needs_block_device:
                out = run(["losetup", "--read-only", "--find", "--show", str(view)])
                device = record.loop = out.stdout.decode().strip()
                self.state.save()
            result = run(driver.argv(device, str(mountpoint)), check=False)
            if result.returncode != 0 or not is_mounted(mountpoint):
                reason = _mount_failure(result, record.loop)
                raise HourglassError(
                    f"Cannot mount {what}, {fstype}, read-only: {reason}.",
                    "The filesystem in the snapshot may be damaged.",
                )
        except BaseException:
            self._forget(record)
            raise
        return Mounted(snapshot, image, fstype, Path(mountpoint), record)

    def unmount(self, mounted: Mounted, *, lazy: bool = True) -> None:
        unmount(mounted.record.mountpoint, lazy=lazy)
        self._forget(mounted.record)

    def _forget(self, record: MountRecord) -> None:
        assert self.state is not None
        unmount(record.mountpoint, lazy=True)
        detach_loop(record.loop, record.view)
        if Path(record.mountpoint).parent == self.state.directory:
            with contextlib.suppress(OSError):
                os.rmdir(record.mountpoint)
        if record in self.state.mounts:
            self.state.mounts.remove(record)
            self.state.save()

    def damage(self) -> list[Damage]:
        """Damaged chunks the server has met so far."""
        assert self.state is not None
        result = []
        with contextlib.suppress(FileNotFoundError):
            for line in (self.state.directory / "damage.log").read_text().splitlines():
                with contextlib.suppress(ValueError, TypeError):
                    result.append(Damage(**json.loads(line)))
        return result

    def detach(self) -> None:
        """Leave the server and mounts running (``hourglass mount``)."""
        self._server = None
        self.state = None

    def close(self) -> None:
        """Unmount everything, stop the server, remove the session directory."""
        if self.state is None:
            return
        for record in list(reversed(self.state.mounts)):
            self._forget(record)
        detach_fuse(str(self.fuse_dir))
        if self._server is not None:
            if self._server.stdin is not None:
                with contextlib.suppress(OSError):
                    self._server.stdin.close()
            try:
                self._server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
        detach_fuse(str(self.fuse_dir))  # the server is gone: whatever is left
        _remove_directory(self.state.directory)
        self.state = None
        self._server = None


def _check_btrfs_copy(view: Path, what: str) -> None:
    """Before Linux 6.7 (temp-fsid), a second device with the UUID of a mounted btrfs is
    taken for a device of that filesystem: refuse instead of showing the wrong snapshot."""
    release = re.match(r"(\d+)\.(\d+)", os.uname().release)
    if release is None or (int(release.group(1)), int(release.group(2))) >= (6, 7):
        return
    result = run(["blkid", "-p", "-o", "value", "-s", "UUID", str(view)], check=False)
    uuid = result.stdout.decode().strip()
    if uuid and Path(f"/sys/fs/btrfs/{uuid}").exists():
        raise Busy(
            f"Another copy of the btrfs filesystem in {what} is mounted, and this kernel "
            f"({os.uname().release}) mounts one copy of a btrfs filesystem at a time.",
            "Unmount the other snapshot first (hourglass umount DIR).",
        )


def _mount_failure(result: subprocess.CompletedProcess[bytes], loop: str | None) -> str:
    """What went wrong, in the words of mount and, for a kernel driver, the kernel log."""
    lines = (result.stderr or b"").decode(errors="replace").strip().splitlines()
    reason = lines[-1] if lines else f"exit code {result.returncode}"
    if loop:
        name = re.compile(rf"\b{re.escape(os.path.basename(loop))}\b")
        kernel = run(["dmesg"], check=False).stdout.decode(errors="replace").splitlines()
        mine = [line.split("]", 1)[-1].strip() for line in kernel[-40:] if name.search(line)]
        if mine:
            reason = f"{mine[-1]} ({reason})"
    return reason
