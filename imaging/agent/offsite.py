"""The agent's off-site copies (``[offsite]``): inside the window, every target gets what
it lacks of the local repository, journal segments and disk images, through the copy job
(``hourglass copy``: ciphertext as it is, the manifest last), under the bandwidth limits.

It runs in a thread of its own, over its own handle on the repository: the journal never
waits on the network. A target that fails (unreachable, full, refused) is tried again
later, ``retry`` seconds at first and twice as long after each failure, up to an hour; its
error is in the status and never reaches the journal.

Compaction deletes the segments it merged. Segments are copied under
:attr:`Offsite.compaction`, which the compaction skips while it is held, so a copy never
reads a segment that is being deleted. A target that got segments before they were merged
gets the merged segment later; the copies it then holds twice are skipped by readers
(:func:`imaging.journal.segments.superseded`) and deleted here once the merged segment is
on the target, as the next compaction does on the source.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from imaging.agent.config import OffsiteConfig, OffsiteTarget
from imaging.errors import HourglassError
from imaging.jobs.copy import CopyRequest, CopyResult, copy
from imaging.journal.segments import is_journal, superseded
from imaging.repository import storage
from imaging.repository.storage import Kind, Store
from imaging.repository.store import Repository, Snapshot, as_store
from imaging.repository.throttle import Limiter, ThrottledStore

MAX_RETRY = 3600.0
_IDLE = 30.0  # outside the window, or between passes: the status is refreshed this often


@dataclass
class TargetState:
    """What the agent knows of one target (``status.json``, ``offsite``)."""

    target: OffsiteTarget
    last_success: float | None = None
    """When the last pass that left the target with every snapshot ended (time.time())."""
    last_copy: float | None = None
    """When the last pass that copied anything ended, complete or not."""
    copied: list[str] = field(default_factory=list)
    """The snapshots the last pass that copied anything copied."""
    bytes_sent: int = 0
    present: set[str] | None = None
    """The snapshots on the target, as last listed (None: not listed yet)."""
    behind: int | None = None
    """Snapshots of the repository the target lacks (None: not known yet)."""
    last_error: str | None = None
    error_at: float | None = None
    failures: int = 0
    due: float = 0.0
    """time.monotonic() at which the target is looked at again."""
    copying: bool = False

    def to_dict(self, next_window: datetime | None) -> dict[str, object]:
        return {
            "target": self.target.location,
            "copying": self.copying,
            "last_success": self.last_success,
            "last_copy": self.last_copy,
            "copied": self.copied,
            "bytes_sent": self.bytes_sent,
            "behind": self.behind,
            "next_window": next_window.isoformat(timespec="seconds") if next_window else None,
            "last_error": self.last_error,
            "error_at": self.error_at,
            "failures": self.failures,
        }


class Offsite:
    """The copies of one agent's repository to ``config.targets``."""

    def __init__(self, repo: Repository, location: str, config: OffsiteConfig) -> None:
        self.source = repo
        self.location = location
        self.config = config
        self.limiter = Limiter(config.bwlimit) if config.bwlimit is not None else None
        """One limiter for every target: the limit is that of this host's link."""
        self.targets = [TargetState(t) for t in config.targets]
        self.compaction = threading.Lock()
        """Held while segments are copied; the compaction does not run then."""
        self.lock = threading.Lock()
        self._repo: Repository | None = None

    # --- the thread -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Copy inside the window until ``stop`` is set."""
        while not stop.is_set():
            if self.window_open():
                self.once(stop, due_only=True)
            self.refresh_behind()
            stop.wait(self._idle())

    def _idle(self) -> float:
        """Seconds until a target is due, or the window opens (at most :data:`_IDLE`)."""
        window = self.config.window
        now = datetime.now()
        if window is not None and not window.contains(now):
            return max(0.1, min(_IDLE, (window.opens(now) - now).total_seconds()))
        due = min((t.due for t in self.targets), default=time.monotonic() + _IDLE)
        return max(0.1, min(_IDLE, due - time.monotonic()))

    def window_open(self) -> bool:
        window = self.config.window
        return window is None or window.contains(datetime.now())

    def next_window(self) -> datetime | None:
        """When the window opens next, while it is closed."""
        window = self.config.window
        now = datetime.now()
        return None if window is None or window.contains(now) else window.opens(now)

    # --- one pass ---------------------------------------------------------------------------

    def once(self, stop: threading.Event | None = None, *, due_only: bool = False) -> None:
        """Copy to every target (``due_only``: those whose time has come) what it lacks,
        when the window is open now."""
        if not self.window_open():
            self.refresh_behind()
            return
        for state in self.targets:
            if stop is not None and stop.is_set():
                return
            if due_only and state.due > time.monotonic():
                continue
            self.copy_to(state, stop)

    def copy_to(self, state: TargetState, stop: threading.Event | None) -> None:
        """One target's pass: a failure is its error, and it is tried again later."""
        state.copying = True
        try:
            results = self._copy(state, stop or threading.Event())
        except Exception as e:
            # Whatever one target's failure is, it is that target's error: the thread goes
            # on with the others and tries it again later.
            with self.lock:
                state.failures += 1
                state.last_error = str(e)
                state.error_at = time.time()
                wait = min(self.config.retry * 2 ** (state.failures - 1), MAX_RETRY)
                state.due = time.monotonic() + wait
            return
        finally:
            state.copying = False
        copied = [i for r in results for i in r.copied]
        with self.lock:
            state.failures = 0
            state.last_error = None
            state.due = time.monotonic() + self.config.every
            if copied:
                state.last_copy = time.time()
                state.copied = copied
                state.bytes_sent = sum(r.bytes_sent for r in results)
            if state.behind == 0:
                state.last_success = time.time()

    def store(self, target: OffsiteTarget) -> Store:
        """The target's store, kept to the bandwidth limit."""
        store = as_store(target.location, s3=target.s3)
        return ThrottledStore(store, self.limiter) if self.limiter is not None else store

    def repo(self) -> Repository:
        """The repository, reached by a handle of this thread's own (unlocked already)."""
        if self._repo is None:
            self._repo = self.source.at(self.location)
        return self._repo

    def _copy(self, state: TargetState, stop: threading.Event) -> list[CopyResult]:
        repo = self.repo()
        store = self.store(state.target)
        window = self.config.window
        results = []
        # Journal segments first: small, and what a restore "as of a second" replays.
        with self.compaction:
            listed = repo.snapshots()
            present = _on_target(store)
            gone = superseded(listed)
            lacking = [s for s in listed if s.id not in present and s.id not in gone]
            segments = tuple(s.id for s in lacking if is_journal(s))
            if segments:
                request = CopyRequest(target=store, ids=segments, window=window)
                results.append(copy(repo, request, stop=stop))
        images = tuple(s.id for s in lacking if not is_journal(s))
        if images and all(r.complete for r in results) and not stop.is_set():
            request = CopyRequest(target=store, ids=images, window=window)
            results.append(copy(repo, request, stop=stop))
        present = _on_target(store)
        present -= self._prune(repo, store, listed, present)
        with self.lock:
            state.present = present
            state.behind = len({s.id for s in listed} - gone - present)
        return results

    def _prune(
        self, repo: Repository, store: Store, listed: Sequence[Snapshot], present: set[str]
    ) -> set[str]:
        """Delete the target's segments that a compacted segment on the target holds (the
        source deleted them when it merged them); returns their ids."""
        here = {s.id for s in listed}
        stale = present - here
        if not stale or not any(
            is_journal(s) and (s.record.journal or {}).get("compacted") for s in listed
        ):
            return set()
        target = Repository.open_with_master(store, repo.keys.master)
        mirrored = [s for s in listed if s.id in present]
        old = []
        for snapshot_id in stale:
            try:
                old.append(target.load_snapshot(snapshot_id))
            except HourglassError:
                continue
        gone = superseded([*mirrored, *old]) & stale
        for snapshot_id in sorted(gone):
            target.delete_snapshot(snapshot_id)
        return gone

    def refresh_behind(self) -> None:
        """What each target lacks, from the repository's list and what the target held when
        it was last listed (it is not contacted: outside the window, or between passes)."""
        try:
            ids = set(self.repo().snapshot_ids())
        except (HourglassError, OSError):
            return
        with self.lock:
            for state in self.targets:
                if state.present is not None:
                    state.behind = len(ids - state.present)

    def status(self) -> list[dict[str, object]]:
        opens = self.next_window()
        with self.lock:
            return [t.to_dict(opens) for t in self.targets]


def _on_target(store: Store) -> set[str]:
    """The snapshots on a target (none when it is not a repository yet)."""
    if not store.reachable() or not store.exists(storage.CONFIG):
        return set()
    return {info.name.key for info in store.list(Kind.SNAPSHOTS)}
