"""Leases of running writers, readers and the garbage collector (docs/FORMAT.md, "Leases").

A lease is a small JSON file with host, pid, boot id and a heartbeat. Nothing ever waits on a
lease for good: a lease whose process is gone (same host) or whose heartbeat is older than
:data:`STALE_AFTER` (another host on a shared drive) is stale and ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imaging.errors import Busy
from imaging.repository.fsutil import write_atomic

HEARTBEAT_EVERY = 30.0
STALE_AFTER = 600.0
GC_LOCK = "gc.lock"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Lease:
    path: Path
    kind: str
    host: str
    pid: int
    boot: str
    started: float
    heartbeat: float

    def stale(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if self.host == socket.gethostname() and (
            self.boot != boot_id() or not _pid_alive(self.pid)
        ):
            return True
        return now - self.heartbeat > STALE_AFTER


def read_lease(path: Path) -> Lease | None:
    try:
        data = json.loads(path.read_bytes())
        return Lease(
            path=path,
            kind=str(data["kind"]),
            host=str(data["host"]),
            pid=int(data["pid"]),
            boot=str(data["boot_id"]),
            started=float(data["started"]),
            heartbeat=float(data["heartbeat"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def live_leases(directory: Path, kinds: tuple[str, ...] = ("writer", "reader")) -> list[Lease]:
    """Leases of processes that are still running; stale lease files are removed."""
    result = []
    for path in directory.glob("*.json"):
        lease = read_lease(path)
        if lease is None:
            # A lease being written, or garbage: judge garbage by age alone.
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > STALE_AFTER:
                    path.unlink()
            continue
        if lease.stale():
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if lease.kind in kinds:
            result.append(lease)
    return result


class _Heartbeat:
    def __init__(self, path: Path, record: dict[str, object]) -> None:
        self.path = path
        self.record = record
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def start(self) -> None:
        self._write()
        self._thread.start()

    def _write(self) -> None:
        self.record["heartbeat"] = time.time()
        write_atomic(self.path, json.dumps(self.record).encode())

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            with contextlib.suppress(OSError):
                self._write()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError):
            self.path.unlink()


def _record(kind: str) -> dict[str, object]:
    now = time.time()
    return {
        "kind": kind,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "boot_id": boot_id(),
        "started": now,
        "heartbeat": now,
    }


@contextlib.contextmanager
def hold(directory: Path, kind: str) -> Iterator[float]:
    """Hold a writer or reader lease while the block runs; yields its start time."""
    record = _record(kind)
    beat = _Heartbeat(directory / f"{uuid.uuid4().hex}.json", record)
    beat.start()
    try:
        yield float(record["started"])  # type: ignore[arg-type]
    finally:
        beat.stop()


@contextlib.contextmanager
def hold_gc(directory: Path) -> Iterator[float]:
    """The one gc lease: :class:`Busy` if a live gc holds it, a stale one is taken over."""
    path = directory / GC_LOCK
    for _ in range(2):
        record = _record("gc")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            lease = read_lease(path)
            if lease is None or lease.stale():
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            raise Busy(
                f"Garbage collection is already running (host {lease.host}, pid {lease.pid}).",
                "Wait for it to finish.",
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        beat = _Heartbeat(path, record)
        beat.start()
        try:
            yield float(record["started"])  # type: ignore[arg-type]
        finally:
            beat.stop()
        return
    raise Busy("Could not take the garbage collection lease.")
