"""Leases of running writers, readers and the garbage collector (docs/FORMAT.md, "Leases").

A lease is a small JSON file with host, pid, boot id and a heartbeat. Nothing ever waits on a
lease for good: a lease whose process is gone (same host) or whose heartbeat is older than
:data:`STALE_AFTER` (another host on a shared drive) is stale and ignored.

On a drive too full for even that, a lease is an empty file whose mtime is its heartbeat: it
names nobody, so everyone treats it as a live writer of unknown parent until it goes stale.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imaging.errors import Busy, NoSpace
from imaging.repository.fsutil import write_atomic

HEARTBEAT_EVERY = 30.0
STALE_AFTER = 600.0
GC_LOCK = "gc.lock"
# Present while a gc deletes chunks directly (no room for trash/): writers wait for it to go.
GC_DIRECT = "gc.direct"
UNKNOWN = "unknown"
"""The kind of an empty lease (written on a full drive): it may be a writer or a reader."""
PENDING = "?"
"""A writer's ``parent`` before it has chosen one: it may trust any snapshot's chunks."""
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user counts)."""
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
    parent: str | None = PENDING
    """A writer's parent snapshot (whose chunks it takes as stored), None for none."""

    @property
    def name(self) -> str:
        return self.path.name

    def stale(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if self.host == socket.gethostname() and (
            self.boot != boot_id() or not pid_alive(self.pid)
        ):
            return True
        return now - self.heartbeat > STALE_AFTER


def read_lease(path: Path) -> Lease | None:
    try:
        data = json.loads(path.read_bytes())
        parent = data.get("parent", PENDING if data["kind"] == "writer" else None)
        return Lease(
            path=path,
            kind=str(data["kind"]),
            host=str(data["host"]),
            pid=int(data["pid"]),
            boot=str(data["boot_id"]),
            started=float(data["started"]),
            heartbeat=float(data["heartbeat"]),
            parent=None if parent is None else str(parent),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _anonymous(path: Path) -> Lease | None:
    """An unreadable lease file as a live lease of unknown kind, judged by its mtime alone
    (an empty lease from a full drive, or one being replaced); None once it is stale."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    if time.time() - mtime > STALE_AFTER:
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return Lease(path, UNKNOWN, "", 0, "", mtime, mtime, PENDING)


def live_leases(
    directory: Path, kinds: tuple[str, ...] = ("writer", "reader", UNKNOWN)
) -> list[Lease]:
    """Leases of processes that are still running; stale lease files are removed. A lease
    of unknown kind is returned whenever writers or readers are asked for."""
    result = []
    for path in directory.glob("*.json"):
        lease = read_lease(path) or _anonymous(path)
        if lease is None:
            continue
        if lease.kind != UNKNOWN and lease.stale():
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if lease.kind in kinds or (lease.kind == UNKNOWN and kinds):
            result.append(lease)
    return result


class LeaseHandle:
    """A lease this process holds: its heartbeat runs in a thread until :meth:`stop`."""

    def __init__(self, path: Path, record: dict[str, object]) -> None:
        self.path = path
        self.record = record
        self.empty = False
        """True when the drive had no room for the record: an empty file, beaten by mtime."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    @property
    def started(self) -> float:
        return float(self.record["started"])  # type: ignore[arg-type]

    def start(self, *, exists: bool = False) -> None:
        """Write the record and start the heartbeat; ``exists``: the file was created
        already (the gc lock), so a full drive leaves it empty rather than failing."""
        try:
            self._write()
        except OSError as e:
            if e.errno not in NO_SPACE:
                raise
            if exists:
                self.empty = True
            else:
                self._write_empty()
        self._thread.start()

    def update(self, **fields: object) -> None:
        """Record more about this lease (a writer's parent); a full drive keeps it empty,
        which others read as the most careful answer."""
        with self._lock:
            self.record.update(fields)
            if not self.empty:
                with contextlib.suppress(OSError):
                    self._write()

    def _write(self) -> None:
        self.record["heartbeat"] = time.time()
        data = json.dumps(self.record).encode()
        try:
            write_atomic(self.path, data)
        except NoSpace as e:
            raise OSError(errno.ENOSPC, "No space left on device") from e

    def _write_empty(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            if e.errno not in NO_SPACE:
                raise
            raise NoSpace(
                f"The backup drive is full: not even a lease of a few bytes can be written "
                f"in {self.path.parent}.",
                "Free space on the drive (delete files that are not part of the repository, "
                "or run `hourglass gc` after `hourglass forget`).",
            ) from e
        os.close(fd)
        self.empty = True

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            with contextlib.suppress(OSError), self._lock:
                if self.empty:
                    os.utime(self.path)
                else:
                    self._write()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError):
            self.path.unlink()


def _record(kind: str) -> dict[str, object]:
    now = time.time()
    record: dict[str, object] = {
        "kind": kind,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "boot_id": boot_id(),
        "started": now,
        "heartbeat": now,
    }
    if kind == "writer":
        record["parent"] = PENDING
    return record


@contextlib.contextmanager
def hold(directory: Path, kind: str) -> Iterator[LeaseHandle]:
    """Hold a writer or reader lease while the block runs.

    A writer then waits while a gc deletes chunks directly (:func:`wait_for_direct_gc`): it
    has announced itself first, so that gc either sees its lease or is seen by it.
    """
    handle = LeaseHandle(directory / f"{uuid.uuid4().hex}.json", _record(kind))
    try:
        handle.start()
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSYS, errno.ENOTSUP):
            raise
        # A read-only repository (a write-protected drive, an http mount: httpdirfs answers
        # ENOSYS to a create): nobody can run gc through this mount, and we cannot announce
        # ourselves. Read without a lease.
        yield handle
        return
    try:
        if kind == "writer":
            wait_for_direct_gc(directory)
        yield handle
    finally:
        handle.stop()


DIRECT_POLL = 0.2


def wait_for_direct_gc(directory: Path) -> None:
    """Wait while a live gc deletes chunks without trash (a full drive): a chunk this
    process finds now may be gone a moment later. A flag left by a dead gc is removed."""
    flag = directory / GC_DIRECT
    while flag.exists():
        # gc removes the flag before its lock: a flag without a live lock is a dead gc's.
        owner = read_lease(directory / GC_LOCK) or _anonymous(directory / GC_LOCK)
        if owner is None or (owner.kind != UNKNOWN and owner.stale()):
            with contextlib.suppress(OSError):
                flag.unlink()
            return
        time.sleep(DIRECT_POLL)


@contextlib.contextmanager
def hold_gc(directory: Path) -> Iterator[LeaseHandle]:
    """The one gc lease: :class:`Busy` if a live gc holds it, a stale one is taken over.

    The lock is created empty with ``O_EXCL`` (that needs no data block, so it works on a full
    drive) and then filled in; an empty lock younger than :data:`STALE_AFTER` is a live gc.
    """
    path = directory / GC_LOCK
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            lease = read_lease(path) or _anonymous(path)
            if lease is None or (lease.kind != UNKNOWN and lease.stale()):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            who = f" (host {lease.host}, pid {lease.pid})" if lease.host else ""
            raise Busy(
                f"Garbage collection is already running{who}.",
                "Wait for it to finish.",
            ) from None
        except OSError as e:
            if e.errno in NO_SPACE:
                raise NoSpace(
                    f"The backup drive is full: not even gc's lease can be created in {directory}.",
                    "Delete a file on the drive that is not part of the repository, then "
                    "run gc again.",
                ) from e
            raise
        os.close(fd)
        handle = LeaseHandle(path, _record("gc"))
        try:
            handle.start(exists=True)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        try:
            yield handle
        finally:
            handle.stop()
        return
    raise Busy("Could not take the garbage collection lease.")
