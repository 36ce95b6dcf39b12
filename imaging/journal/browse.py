"""One host's file journal browsed as of a second (what the app's Restore files shows): the
hosts a repository holds journals of, read from the manifests alone; the tree the journal
records at a second, listed a folder at a time; the events of one path."""

from __future__ import annotations

import posixpath
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from imaging.files.browse import Entry
from imaging.journal.records import Entry as JournalEntry
from imaging.journal.records import Event
from imaging.journal.restore import JournalVersion, _concerns, as_of, host_segments
from imaging.journal.segments import is_journal, ordered_events, replay, segment_span, superseded
from imaging.repository.store import Repository, Snapshot


def local(ns: int) -> datetime:
    """A journal time (ns since the epoch) as a local time."""
    return datetime.fromtimestamp(ns / 1e9, UTC).astimezone()


@dataclass(frozen=True)
class JournalGap:
    """A span the agent did not watch: changes in it may be missed (the rescan after it
    recorded what it found)."""

    from_ns: int
    to_ns: int
    reason: str
    detail: str | None
    paths: tuple[str, ...]

    @classmethod
    def of(cls, event: Event) -> JournalGap:
        """The gap a ``gap`` event records."""
        return cls(
            event.from_ns or event.ns,
            event.to_ns or event.ns,
            event.reason or "",
            event.detail,
            event.paths,
        )


@dataclass(frozen=True)
class JournalHost:
    """The file journal of one host, as its segments' manifests describe it."""

    host: str
    source_id: str
    first_ns: int
    newest_ns: int
    """The newest recovery point: the end of the newest segment's span."""
    gaps: tuple[JournalGap, ...]


def journal_hosts(snapshots: Iterable[Snapshot]) -> list[JournalHost]:
    """Every host the snapshots hold a file journal of, by name; no index is read."""
    listed = list(snapshots)
    gone = superseded(listed)
    by_source: dict[str, list[Snapshot]] = {}
    for s in listed:
        if is_journal(s) and s.id not in gone:
            by_source.setdefault(s.source_id, []).append(s)
    hosts = []
    for source_id, segments in by_source.items():
        spans = [segment_span(s) for s in segments]
        gaps = []
        for s in segments:
            for d in (s.record.journal or {}).get("events", []):
                if isinstance(d, dict) and d.get("type") == "gap":
                    name = f"journal segment {s.id[:12]}"
                    gaps.append(JournalGap.of(Event.from_dict(d, [], name)))
        gaps.sort(key=lambda g: (g.from_ns, g.to_ns))
        hosts.append(
            JournalHost(
                host=segments[0].source,
                source_id=source_id,
                first_ns=min(first for first, _ in spans),
                newest_ns=max(last for _, last in spans),
                gaps=tuple(gaps),
            )
        )
    return sorted(hosts, key=lambda h: h.host)


def _entry(path: str, name: str, state: JournalEntry) -> Entry:
    meta = state.meta
    return Entry(
        name=name,
        path=path,
        type=meta.ftype,
        size=meta.size,
        mtime=local(meta.mtime_ns),
        mode=stat.S_IMODE(meta.mode),
        uid=meta.uid,
        gid=meta.gid,
        nlink=1,
        target=meta.target,
    )


class JournalTree:
    """The files and folders the journal records as of the second ``at``, listed like a
    snapshot's filesystem. The protected paths (the entries whose folder the journal does
    not hold) are listed in ``/`` by their whole path."""

    def __init__(self, events: Iterable[Event], at: datetime) -> None:
        self.at = at
        self.state = replay(events, as_of(at))
        self._children: dict[str, list[str]] = {}
        for path in self.state:
            if path == "/":
                continue
            parent = posixpath.dirname(path)
            self._children.setdefault(parent if parent in self.state else "/", []).append(path)

    def _name(self, path: str) -> str:
        parent = posixpath.dirname(path)
        return posixpath.basename(path) if parent in self.state else path

    def stat(self, path: str) -> Entry | None:
        state = self.state.get(path)
        return None if state is None else _entry(path, self._name(path), state)

    def listdir(self, path: str) -> list[Entry]:
        """The entries in the folder ``path`` (``/``: the protected paths)."""
        return [
            _entry(p, self._name(p), self.state[p]) for p in sorted(self._children.get(path, []))
        ]

    def search(self, name_substring: str, limit: int = 200) -> list[str]:
        """Paths whose last name contains ``name_substring`` (case-insensitive), up to
        ``limit``, in path order."""
        needle = name_substring.lower()
        found = sorted(p for p in self.state if needle in posixpath.basename(p).lower())
        return found[:limit]


class JournalBrowser:
    """One host's journal read once (its segments and their indexes): trees as of any
    second, and the events of a path, without reading it again."""

    def __init__(self, repo: Repository, source: str) -> None:
        segments = host_segments(repo, source)
        self.events = ordered_events(segments)

    def tree(self, at: datetime) -> JournalTree:
        return JournalTree(self.events, at)

    def versions(self, path: str) -> list[JournalVersion]:
        """Every event of ``path`` (absolute, as on the host), oldest first: its versions,
        the renames and deletes that reach it, and the gaps over it."""
        path = posixpath.normpath(path)
        return [JournalVersion(e) for e in self.events if _concerns(e, path)]
