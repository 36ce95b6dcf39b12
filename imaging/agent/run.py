"""The agent's work: watch the protected filesystems, reconcile what changed against the
journal, commit segments (docs/FORMAT.md, "File journal")."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import select
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imaging.agent.config import AgentConfig
from imaging.agent.fanotify import FAN_CLOSE_WRITE, FilesystemWatch
from imaging.agent.offsite import Offsite
from imaging.errors import HourglassError
from imaging.journal.records import Entry, Event, ftype_of, source_id_of
from imaging.journal.segments import (
    SegmentWriter,
    apply,
    compact,
    is_journal,
    load_segments,
    meta_of,
    ordered_events,
    read_xattrs,
    replay,
    segment_span,
    superseded,
)
from imaging.repository.fsutil import write_atomic
from imaging.repository.store import Repository

STATUS_FILE = "status.json"
COPY_STOP_WAIT = 30.0
_RETRY_TORN = 1.0  # a file that changed while it was copied is copied again this much later


@dataclass
class Pending:
    seen_ns: int
    close_ns: int
    due: float


def excluded(path: str, patterns: tuple[str, ...]) -> bool:
    """A pattern with a slash matches the whole path (``*`` crosses slashes), one without
    matches the name of the path or of any directory above it."""
    names = path.split("/")
    for pattern in patterns:
        if "/" in pattern:
            if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern + "/*"):
                return True
        elif any(fnmatch.fnmatchcase(name, pattern) for name in names if name):
            return True
    return False


class Agent:
    """One agent over one repository. :meth:`run` until ``stop`` is set, or :meth:`once`."""

    def __init__(self, repo: Repository, config: AgentConfig) -> None:
        self.repo = repo
        self.config = config
        self.hostname = socket.gethostname()
        self.roots = config.paths
        own = [str(repo.path)] if repo.store.local_path is not None else []
        self.skip = tuple(os.path.realpath(p) for p in [*own, config.state_dir])
        self.state: dict[str, Entry] = {}
        self.parent: str | None = None
        self.known: set[bytes] = set()
        self.newest_ns = 0
        self.segments = 0
        self.load()
        self.had_journal = self.segments > 0
        self.captured: dict[str, int] = {}
        self.pending: dict[str, Pending] = {}
        self.lock = threading.Lock()
        self.overflow_from: int | None = None
        self.last_read_ns = time.time_ns()
        self.writer: SegmentWriter | None = None
        self.unreachable_since: int | None = None
        """Set when a commit failed: what it held is captured again once the repository
        answers (its chunks may not have reached it), inside an ``unreachable`` gap."""
        self.retry: set[str] = set()
        self.last_commit = 0.0
        self.last_error: str | None = None
        self._compacted_at = time.monotonic()
        self.gaps = 0
        self.started = time.time()
        self.watches: list[FilesystemWatch] = []
        self.unresolved = 0
        self._status_at = 0.0
        self.offsite = (
            Offsite(repo, config.location, config.offsite) if config.offsite.targets else None
        )

    def load(self) -> None:
        """The journal as the repository holds it: the state of every path, the parent of
        the next segment, the chunks committed segments refer to."""
        segments = load_segments(self.repo, source_id=source_id_of(self.hostname))
        self.state = replay(ordered_events(segments))
        self.parent = segments[-1].snapshot.id if segments else None
        self.known = {c for s in segments for e in s.events for c in e.chunks}
        self.newest_ns = max((s.to_ns for s in segments), default=0)
        self.segments = len(segments)

    # --- what is watched --------------------------------------------------------------------

    def watched(self, path: str) -> bool:
        if not any(path == r or path.startswith(r.rstrip("/") + "/") for r in self.roots):
            return False
        if any(path == s or path.startswith(s + "/") for s in self.skip):
            return False
        return not excluded(path, self.config.exclude)

    # --- writing ----------------------------------------------------------------------------

    def _writer(self) -> SegmentWriter:
        if self.writer is None:
            w = SegmentWriter(self.repo, self.roots, self.config.exclude, self.parent, self.known)
            w.__enter__()
            self.writer = w
        return self.writer

    def emit(self, event: Event) -> None:
        self._writer().add(event)
        apply(self.state, event)

    def commit(self) -> None:
        w = self.writer
        if w is None:
            return
        self.writer = None
        try:
            if w.events:
                snapshot = w.commit()
                self.parent = snapshot.id
                self.segments += 1
                self.newest_ns = max(
                    int((snapshot.record.journal or {}).get("to_ns", 0)), self.newest_ns
                )
        except (HourglassError, OSError) as e:
            self.abandon(w, e)
        finally:
            with contextlib.suppress(HourglassError, OSError):
                w.__exit__(None, None, None)
            self.last_commit = time.monotonic()

    def abandon(self, w: SegmentWriter | None, error: Exception) -> None:
        """The repository failed: what ``w`` held is captured again once it answers."""
        self.last_error = str(error)
        events = w.events if w is not None else []
        if self.unreachable_since is None:
            self.unreachable_since = min([time.time_ns(), *(ev.ns for ev in events)])
        for event in events:
            self.retry.update(p for p in (event.path, event.to) if p and event.type != "gap")

    def recover(self) -> bool:
        """After a failed commit: read the journal again and queue what the lost segment
        held, with a gap for the span. False while the repository does not answer."""
        if self.unreachable_since is None:
            return True
        try:
            self.load()
        except (HourglassError, OSError) as e:
            self.last_error = str(e)
            return False
        since, self.unreachable_since = self.unreachable_since, None
        self.gap(since, time.time_ns(), "unreachable", self.last_error)
        now = time.time_ns()
        with self.lock:
            for path in self.retry:
                self.pending.setdefault(path, Pending(now, 0, 0.0))
        self.retry = set()
        self.captured.clear()
        return True

    def gap(self, from_ns: int, to_ns: int, reason: str, detail: str | None = None) -> None:
        self.gaps += 1
        self.emit(
            Event(
                ns=to_ns,
                type="gap",
                path=self.roots[0],
                from_ns=from_ns,
                to_ns=to_ns,
                reason=reason,
                paths=self.roots,
                detail=detail,
            )
        )

    # --- reconciling paths with the journal -------------------------------------------------

    def _below_known(self, path: str) -> bool:
        """True when the journal holds entries below ``path`` (a directory of it)."""
        entry = self.state.get(path)
        if entry is None or entry.meta.ftype != "dir":
            return False
        prefix = path.rstrip("/") + "/"
        return any(p.startswith(prefix) for p in self.state)

    def reconcile(self, touched: dict[str, Pending], cause: str) -> dict[str, Pending]:
        """Record what differs between ``touched`` paths on disk and the journal; returns
        the paths to look at again later (the per-file interval, a file copied while it
        changed)."""
        later: dict[str, Pending] = {}
        present: dict[str, os.stat_result] = {}
        gone: list[str] = []
        for path in sorted(touched):
            if not self.watched(path):
                continue
            try:
                present[path] = os.lstat(path)
            except FileNotFoundError:
                if path in self.state:
                    gone.append(path)
            except OSError as e:
                now = time.time_ns()
                self.gap(now, now, "unreadable", f"{path}: {e.strerror}")
        by_inode = {}
        for path in gone:
            entry = self.state.get(path)
            if entry is not None:
                by_inode[(entry.meta.dev, entry.meta.ino)] = path
        paired: set[str] = set()
        for path in sorted(present, key=lambda p: (p.count("/"), p)):
            st = present[path]
            ftype = ftype_of(st.st_mode)
            if ftype is None:
                continue
            seen = touched[path].seen_ns
            old = self.state.get(path)
            inode = (st.st_dev, st.st_ino)
            if (old is None or (old.meta.dev, old.meta.ino) != inode) and inode in by_inode:
                source = by_inode.pop(inode)
                paired.add(source)
                self.emit(Event(ns=seen, type="rename", path=source, to=path))
                old = self.state.get(path)
                if ftype == "dir":
                    continue
            if ftype == "dir":
                self._directory(path, st, old, seen, later, cause)
            elif ftype == "symlink":
                self._symlink(path, st, old, seen, cause)
            else:
                self._file(path, st, old, touched[path], later, cause)
        for path in gone:
            if path not in paired:
                self.emit(Event(ns=touched[path].seen_ns, type="delete", path=path))
        return later

    def _directory(
        self,
        path: str,
        st: os.stat_result,
        old: Entry | None,
        seen: int,
        later: dict[str, Pending],
        cause: str,
    ) -> None:
        meta = meta_of(st, read_xattrs(path), "dir")
        if old is not None and old.meta.ftype == "dir":
            if (old.meta.mode, old.meta.uid, old.meta.gid) != (meta.mode, meta.uid, meta.gid):
                self.emit(Event(ns=seen, type="create", path=path, cause=cause, meta=meta))
            return
        self.emit(Event(ns=seen, type="create", path=path, cause=cause, meta=meta))
        # A directory that appeared (made, or moved in from elsewhere): what it holds is
        # new to the journal too.
        try:
            names = os.listdir(path)
        except OSError:
            return
        now = time.time_ns()
        inside = {os.path.join(path, n): Pending(now, 0, 0.0) for n in names}
        later.update(self.reconcile(inside, cause))

    def _symlink(
        self, path: str, st: os.stat_result, old: Entry | None, seen: int, cause: str
    ) -> None:
        try:
            target = os.readlink(path)
        except OSError:
            return
        meta = meta_of(st, {}, "symlink", target)
        if old is not None and old.meta.ftype == "symlink" and old.meta.target == target:
            return
        self.emit(Event(ns=seen, type="create", path=path, cause=cause, meta=meta))

    def _file(
        self,
        path: str,
        st: os.stat_result,
        old: Entry | None,
        pending: Pending,
        later: dict[str, Pending],
        cause: str,
    ) -> None:
        now_meta = meta_of(st, {}, "file")
        captured = self.captured.get(path, 0)
        changed = (
            old is None
            or old.meta.ftype != "file"
            or not old.meta.same_as(now_meta)
            or pending.close_ns > captured
        )
        if not changed:
            return
        wait = captured + int(self.config.interval * 1e9) - time.time_ns()
        if captured and wait > 0:
            later[path] = Pending(pending.seen_ns, pending.close_ns, time.monotonic() + wait / 1e9)
            return
        if not self._capture(path, pending, cause if pending.close_ns == 0 else "close_write"):
            later[path] = Pending(pending.seen_ns, pending.close_ns, time.monotonic() + _RETRY_TORN)

    def _capture(self, path: str, pending: Pending, cause: str) -> bool:
        """Copy ``path`` into the segment; False when it changed while it was read."""
        started = time.time_ns()
        try:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOATIME | os.O_CLOEXEC)
            except PermissionError:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return True  # gone: its delete event is on its way
        except OSError as e:
            self.gap(started, started, "unreadable", f"{path}: {e.strerror}")
            self.last_error = f"{path}: {e.strerror}"
            return True
        with os.fdopen(fd, "rb", buffering=0) as f:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                return True
            xattrs = read_xattrs(fd)
            try:
                ids, size, new = self._writer().store(f)
            except OSError as e:
                self.gap(started, time.time_ns(), "unreadable", f"{path}: {e.strerror}")
                self.last_error = f"{path}: {e.strerror}"
                return True
            after = os.fstat(fd)
        key = ("st_size", "st_mtime_ns", "st_ctime_ns")
        if any(getattr(before, k) != getattr(after, k) for k in key) or size != before.st_size:
            return False
        ns = (
            pending.close_ns
            if pending.close_ns and before.st_ctime_ns <= pending.close_ns
            else started
        )
        self.captured[path] = started
        self.emit(
            Event(
                ns=ns,
                type="write",
                path=path,
                cause=cause,
                meta=meta_of(before, xattrs, "file"),
                chunks=ids,
                new=new,
            )
        )
        return True

    # --- rescans ----------------------------------------------------------------------------

    def rescan(self) -> None:
        """Compare every protected path on disk with the journal and record the difference."""
        now = time.time_ns()
        touched: dict[str, Pending] = {}
        for root in self.roots:
            problem = self._unavailable(root)
            if problem is not None:
                # An unmounted filesystem is not a tree of deleted files: leave it as the
                # journal has it, and say so.
                self.gap(now, now, "unreadable", problem)
                self.last_error = problem
                continue
            if self.watched(root):
                touched[root] = Pending(now, 0, 0.0)
            for top, dirs, files in os.walk(root):
                dirs[:] = [d for d in dirs if self.watched(os.path.join(top, d))]
                for name in dirs + files:
                    touched[os.path.join(top, name)] = Pending(now, 0, 0.0)
        for path in self.state:
            if self.watched(path) and path not in touched and self._scanned(path, touched):
                touched[path] = Pending(now, 0, 0.0)
        later = self.reconcile(touched, "rescan")
        with self.lock:
            for path, p in later.items():
                self.pending.setdefault(path, p)

    def _unavailable(self, root: str) -> str | None:
        """Why ``root`` cannot be rescanned now, or None: it is missing, or empty while the
        journal holds files below it (a filesystem not mounted; device numbers change
        between boots, so they cannot tell)."""
        try:
            empty = not os.listdir(root)
        except OSError as e:
            return f"{root}: {e.strerror}; it was not rescanned"
        if empty and self._below_known(root):
            return f"{root} is empty (not mounted?); it was not rescanned"
        return None

    def _scanned(self, path: str, touched: dict[str, Pending]) -> bool:
        return any(
            (path == r or path.startswith(r.rstrip("/") + "/")) and r in touched for r in self.roots
        )

    def start_gap(self) -> None:
        """The span the agent did not run: from the journal's newest event to now."""
        if self.had_journal:
            self.gap(self.newest_ns, time.time_ns(), "not running")

    # --- the event loop ---------------------------------------------------------------------

    def once(self, stop: threading.Event | None = None) -> None:
        """One rescan pass, committed; then the journal compacted; then, when the window is
        open now, one off-site copy to each target (stopped early when ``stop`` is set)."""
        self.start_gap()
        self.rescan()
        self.commit()
        self.compact()
        if self.offsite is not None:
            self.offsite.once(stop)
        self.write_status(running=False)

    def compact(self) -> None:
        """Merge the segments that ended ``compact_after`` seconds ago or more (the agent
        commits one a second while files change: a busy host would otherwise pile up
        thousands, and every listing reads them all). A failure is the last error; the
        next try finds what this one left (FORMAT.md, "Compaction")."""
        self._compacted_at = time.monotonic()
        # Not while segments are copied off-site: the copy would find the ones it merged
        # gone. Skipped, it runs at its next turn.
        copying = self.offsite.compaction if self.offsite is not None else threading.Lock()
        if not copying.acquire(blocking=False):
            return
        try:
            self._compact()
        finally:
            copying.release()

    def _compact(self) -> None:
        source_id = source_id_of(self.hostname)
        cutoff = time.time_ns() - int(self.config.compact_after * 1e9)
        try:
            mine = [s for s in self.repo.snapshots() if s.source_id == source_id]
            gone = superseded(mine)
            for snapshot_id in sorted(gone):  # left by an interrupted compaction
                self.repo.delete_snapshot(snapshot_id)
            live = [s for s in mine if is_journal(s) and s.id not in gone]
            # Decided from the manifests alone: the indexes are read only to merge.
            if sum(segment_span(s)[1] < cutoff for s in live) < 2:
                return
            segments = load_segments(self.repo, live)
            made = compact(self.repo, segments, before_ns=cutoff)
            merged = superseded([*made, *live])
            after = sorted(
                [s for s in live if s.id not in merged] + made,
                key=lambda s: (segment_span(s)[0], s.order),
            )
            self.parent = after[-1].id if after else None
            self.segments = len(after)
        except (HourglassError, OSError) as e:
            self.last_error = f"compacting the journal: {e}"

    def _read_events(self, stop: threading.Event) -> None:
        poller = select.poll()
        by_fd = {w.fileno(): w for w in self.watches}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        while not stop.is_set():
            for fd, _ in poller.poll(200):
                now = time.time_ns()
                due = time.monotonic() + self.config.settle
                with self.lock:
                    for event in by_fd[fd].read():
                        if event.overflow:
                            if self.overflow_from is None:
                                self.overflow_from = self.last_read_ns
                            continue
                        if event.path is None:
                            self.unresolved += 1
                            continue
                        if not self.watched(event.path):
                            continue
                        close = now if event.mask & FAN_CLOSE_WRITE else 0
                        p = self.pending.get(event.path)
                        if p is None:
                            self.pending[event.path] = Pending(now, close, due)
                        else:
                            # Its due time stays: a file closed again and again is still
                            # copied (once per interval), never put off for good.
                            p.close_ns = max(p.close_ns, close)
                    self.last_read_ns = now

    def run(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Watch, reconcile and commit until ``stop`` is set; commit what is pending then."""
        devices: dict[int, str] = {}
        for root in self.roots:
            devices.setdefault(os.stat(root).st_dev, root)
        self.watches = [FilesystemWatch(path) for path in devices.values()]
        reader = threading.Thread(target=self._read_events, args=(stop,), daemon=True)
        reader.start()
        copier: threading.Thread | None = None
        try:
            self.start_gap()
            self.rescan()
            self.commit()
            if self.offsite is not None:
                copier = threading.Thread(
                    target=self.offsite.run, args=(stop,), name="offsite", daemon=True
                )
                copier.start()
            self.write_status(running=True)
            if on_ready is not None:
                on_ready()
            while not stop.wait(0.1):
                self.step()
            self.step(final=True)
        finally:
            stop.set()
            reader.join()
            for w in self.watches:
                w.close()
            self.commit()
            if copier is not None:
                # A copy in flight stops after what is durable on the target (its manifests
                # are written last); one stuck in a request is left to the exit.
                copier.join(COPY_STOP_WAIT)
            self.write_status(running=False)

    def step(self, final: bool = False) -> None:
        with self.lock:
            overflow, self.overflow_from = self.overflow_from, None
            now = time.monotonic()
            due = {p: v for p, v in self.pending.items() if final or v.due <= now}
            for p in due:
                del self.pending[p]
        if not self.recover():
            with self.lock:
                for path, again in due.items():
                    again.due = time.monotonic() + 1.0  # try again in a second
                    self.pending.setdefault(path, again)
                if overflow is not None and self.overflow_from is None:
                    self.overflow_from = overflow
            self.write_status(running=True)
            return
        try:
            if overflow is not None:
                self.gap(overflow, time.time_ns(), "overflow", "the fanotify queue overflowed")
                self.rescan()
            if due:
                later = self.reconcile(due, "create")
                with self.lock:
                    for path, again in later.items():
                        self.pending.setdefault(path, again)
            if self.writer is not None and (
                final or time.monotonic() - self.last_commit >= self.config.commit_interval
            ):
                self.commit()
            if (
                not final
                and self.writer is None
                and time.monotonic() - self._compacted_at >= self.config.compact_every
            ):
                self.compact()
        except (HourglassError, OSError) as e:
            w, self.writer = self.writer, None
            self.abandon(w, e)
            if w is not None:
                with contextlib.suppress(HourglassError, OSError):
                    w.__exit__(None, None, None)
            with self.lock:
                for path, again in due.items():
                    self.pending.setdefault(path, again)
        if final or time.monotonic() - self._status_at >= 1.0:
            self.write_status(running=True)

    # --- status -----------------------------------------------------------------------------

    def write_status(self, *, running: bool) -> None:
        self._status_at = time.monotonic()
        with self.lock:
            queue = len(self.pending)
        queue += len(self.writer.events) if self.writer else 0
        record: dict[str, object] = {
            "pid": os.getpid() if running else None,
            "host": self.hostname,
            "started": self.started,
            "heartbeat": time.time(),
            "repository": self.repo.location,
            "protect": list(self.roots),
            "exclude": list(self.config.exclude),
            "newest_ns": self.newest_ns,
            "queue": queue + len(self.retry),
            "segments": self.segments,
            "gaps": self.gaps,
            "unresolved": self.unresolved,
            "last_error": self.last_error,
        }
        if self.offsite is not None:
            record["offsite"] = self.offsite.status()
        directory = Path(self.config.state_dir)
        with contextlib.suppress(OSError):
            directory.mkdir(parents=True, exist_ok=True)
            write_atomic(directory / STATUS_FILE, json.dumps(record).encode())


def read_status(state_dir: str) -> dict[str, object] | None:
    try:
        return json.loads((Path(state_dir) / STATUS_FILE).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None
