"""Journal segments in a repository: reading them, replaying their events, writing one
(docs/FORMAT.md, "File journal", "Write order of a segment")."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from imaging.errors import FormatError
from imaging.journal.chunker import CHUNKER, chunks
from imaging.journal.records import JOURNAL_KIND, Entry, Event, Meta, source_id_of
from imaging.repository import leases
from imaging.repository.records import BackupStats, ChunkIndex, ImageRecord, Manifest
from imaging.repository.store import Repository, Snapshot
from imaging.units import local_now

INDEX_NAME = "chunks"
JOURNAL_VERSION = 2  # 1: a segment as the agent wrote it; 2: it may be a compacted one
COMPACT_EVENTS = 20_000
"""At most this many events in one compacted segment (its manifest is about 6 MB): the
compactions after it leave it whole."""


def is_journal(snapshot: Snapshot) -> bool:
    return snapshot.kind == JOURNAL_KIND


@dataclass(frozen=True)
class Segment:
    """A committed segment: its snapshot and its events (chunk ids resolved)."""

    snapshot: Snapshot
    events: tuple[Event, ...]

    @property
    def from_ns(self) -> int:
        return segment_span(self.snapshot)[0]

    @property
    def to_ns(self) -> int:
        return segment_span(self.snapshot)[1]

    @property
    def compacted(self) -> bool:
        return bool((self.snapshot.record.journal or {}).get("compacted"))


def segment_span(snapshot: Snapshot) -> tuple[int, int]:
    """(from_ns, to_ns) of a journal segment's manifest."""
    journal = snapshot.record.journal or {}
    return int(journal.get("from_ns", 0)), int(journal.get("to_ns", 0))


def superseded(snapshots: Iterable[Snapshot]) -> set[str]:
    """The ids of journal segments a compacted segment holds the events of: of the same
    source, committed before it, their span inside its span (FORMAT.md, "Compaction"). A
    compaction interrupted between its commit and the deletion of what it merged leaves
    them; readers skip them, and the next compaction deletes them."""
    journal = [s for s in snapshots if is_journal(s)]
    covers = [s for s in journal if (s.record.journal or {}).get("compacted")]
    gone = set()
    for c in covers:
        start, end = segment_span(c)
        for s in journal:
            if s.id == c.id or s.source_id != c.source_id or s.order >= c.order:
                continue
            first, last = segment_span(s)
            if start <= first and last <= end:
                gone.add(s.id)
    return gone


def load_segments(
    repo: Repository,
    snapshots: Iterable[Snapshot] | None = None,
    *,
    source_id: str | None = None,
    keep_superseded: bool = False,
) -> list[Segment]:
    """Every journal segment (of ``source_id``, when given), oldest first; segments a
    compacted one holds are left out (unless ``keep_superseded``)."""
    listed = list(repo.snapshots() if snapshots is None else snapshots)
    gone = set() if keep_superseded else superseded(listed)
    result = []
    for snapshot in listed:
        if not is_journal(snapshot) or (source_id and snapshot.source_id != source_id):
            continue
        if snapshot.id in gone:
            continue
        name = f"journal segment {snapshot.id[:12]}"
        journal = snapshot.record.journal or {}
        version = journal.get("version", 1)
        if not isinstance(version, int) or version > JOURNAL_VERSION:
            raise FormatError(
                f"{name}: journal version {version!r} is newer than this Hourglass reads "
                f"({JOURNAL_VERSION})."
            )
        ids = list(repo.load_index(snapshot, INDEX_NAME))
        events = tuple(Event.from_dict(d, ids, name) for d in journal.get("events", []))
        result.append(Segment(snapshot, events))
    result.sort(key=lambda s: (s.from_ns, s.snapshot.order))
    return result


def ordered_events(segments: Iterable[Segment]) -> list[Event]:
    """The events of ``segments`` in the journal's order (by ``ns``; a stable sort keeps
    the segments' order for equal times)."""
    events = [e for s in segments for e in s.events]
    events.sort(key=lambda e: e.ns)
    return events


def _below(state: dict[str, Entry], path: str) -> list[str]:
    """The paths below ``path``: only a directory has any (a scan of the whole state, so
    it is not made for files: a burst of deletes stays linear)."""
    entry = state.get(path)
    if entry is None or entry.meta.ftype != "dir":
        return []
    prefix = path.rstrip("/") + "/"
    return [p for p in state if p.startswith(prefix)]


def apply(state: dict[str, Entry], event: Event) -> None:
    """Change ``state`` (path -> entry) by one event."""
    if event.type in ("write", "create"):
        assert event.meta is not None
        old = state.get(event.path)
        if old is not None and old.meta.ftype == "dir" and event.meta.ftype != "dir":
            for p in _below(state, event.path):
                del state[p]
        state[event.path] = Entry(meta=event.meta, chunks=event.chunks, ns=event.ns)
    elif event.type == "delete":
        for p in _below(state, event.path):
            del state[p]
        state.pop(event.path, None)
    elif event.type == "rename" and event.to is not None:
        moving = [event.path, *_below(state, event.path)]
        taken = {p: state.pop(p) for p in moving if p in state}
        for p in _below(state, event.to):
            del state[p]
        state.pop(event.to, None)
        for p, entry in taken.items():
            state[event.to + p[len(event.path) :]] = entry


def replay(events: Iterable[Event], until_ns: int | None = None) -> dict[str, Entry]:
    """The tree the journal records as of ``until_ns`` (exclusive; None: its end)."""
    state: dict[str, Entry] = {}
    for event in events:
        if until_ns is not None and event.ns >= until_ns:
            break
        apply(state, event)
    return state


def meta_of(
    st: os.stat_result, xattrs: dict[str, bytes], ftype: str, target: str | None = None
) -> Meta:
    return Meta(
        ftype=ftype,
        mode=st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size if ftype == "file" else 0,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        atime_ns=st.st_atime_ns,
        ino=st.st_ino,
        dev=st.st_dev,
        xattrs=xattrs,
        target=target,
    )


def read_xattrs(path: str | int) -> dict[str, bytes]:
    """The extended attributes of ``path`` (an fd for files), none where unsupported."""
    result: dict[str, bytes] = {}
    follow = not isinstance(path, int)
    try:
        names = os.listxattr(path, follow_symlinks=False) if follow else os.listxattr(path)
    except OSError:
        return result
    for name in names:
        with contextlib.suppress(OSError):
            result[name] = (
                os.getxattr(path, name, follow_symlinks=False)
                if follow
                else os.getxattr(path, name)
            )
    return result


@dataclass
class SegmentWriter:
    """One segment being written, under a writer lease from its first chunk to its commit."""

    repo: Repository
    paths: tuple[str, ...]
    exclude: tuple[str, ...]
    parent: str | None
    known: set[bytes]
    """Chunk ids committed segments refer to: taken as stored (the parent rule of gc)."""
    hostname: str = field(default_factory=socket.gethostname)
    events: list[Event] = field(default_factory=list)
    new_bytes: int = 0
    new_chunks: int = 0
    stored: int = 0
    read_bytes: int = 0
    _lease: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _handle: leases.LeaseHandle | None = None
    _started: float = field(default_factory=time.monotonic)
    _from_ns: int = field(default_factory=time.time_ns)

    def __enter__(self) -> SegmentWriter:
        self._handle = self._lease.enter_context(self.repo.writer())
        self._handle.update(parent=self.parent)
        return self

    def __exit__(self, *exc: object) -> None:
        # Chunks written and not committed are kept (the next segment finds them).
        with contextlib.suppress(Exception):
            self.repo.commit_chunks()
        self._lease.close()

    def store(self, f: BinaryIO) -> tuple[tuple[bytes, ...], int, int]:
        """Store the chunks of ``f``: their ids, the bytes read and the new bytes stored."""
        ids = []
        size = new = 0
        for view in chunks(f):
            chunk_id = self.repo.keys.chunk_id(view)
            ids.append(chunk_id)
            size += len(view)
            if chunk_id in self.known:
                continue
            if not self.repo.has_chunk(chunk_id):
                data = self.repo.encode_chunk(chunk_id, view)
                if self.repo.write_chunk(chunk_id, data):
                    new += len(view)
                    self.stored += len(data)
                    self.new_chunks += 1
            self.known.add(chunk_id)
        self.read_bytes += size
        self.new_bytes += new
        return tuple(ids), size, new

    def add(self, event: Event) -> None:
        self.events.append(event)

    def commit(self, span: tuple[int, int] | None = None) -> Snapshot:
        """Commit the segment (chunks, index, manifest: the commit point). ``span``: the
        (from_ns, to_ns) of the segments a compacted segment merges (see :func:`compact`)."""
        repo = self.repo
        repo.commit_chunks()
        repo.sync_chunk_dirs()
        events = sorted(self.events, key=lambda e: e.ns)
        flat: list[bytes] = []
        records = []
        size = 0
        for event in events:
            records.append(event.to_dict(len(flat)))
            flat.extend(event.chunks)
            if event.type == "write" and event.meta is not None:
                size += event.meta.size
        index = ChunkIndex(b"".join(flat))
        snapshot_id = repo.new_snapshot_id()
        mac = repo.write_index(snapshot_id, INDEX_NAME, index, len(index) * repo.block_size)
        when, when_ns = local_now(), time.time_ns()
        journal: dict[str, object] = {
            "version": 1 if span is None else JOURNAL_VERSION,
            "from_ns": min([self._from_ns, *(e.ns for e in events)]) if span is None else span[0],
            "to_ns": max([when_ns, *(e.ns for e in events)]) if span is None else span[1],
            "paths": list(self.paths),
            "exclude": list(self.exclude),
            "chunker": dict(CHUNKER),
            "events": records,
        }
        if span is not None:
            journal["compacted"] = True
        manifest = Manifest.make(
            {},
            id=snapshot_id,
            time=when.isoformat(),
            time_ns=when_ns,
            hostname=self.hostname,
            source=self.hostname,
            source_id=source_id_of(self.hostname),
            kind=JOURNAL_KIND,
            size=size,
            parent=self.parent,
            images=(
                ImageRecord.make(
                    {},
                    name=INDEX_NAME,
                    offset=0,
                    size=len(index) * repo.block_size,
                    blocks=len(index),
                    method="journal",
                    index_mac=mac,
                ),
            ),
            journal=journal,
            stats=BackupStats(
                read=self.read_bytes,
                new_bytes=self.new_bytes,
                stored=self.stored,
                new_chunks=self.new_chunks,
                elapsed=round(time.monotonic() - self._started, 3),
            ),
        )
        return repo.commit_snapshot(manifest.to_dict())


def compact(
    repo: Repository,
    segments: list[Segment],
    *,
    before_ns: int,
    limit: int = COMPACT_EVENTS,
) -> list[Snapshot]:
    """Merge runs of consecutive ``segments`` (one host's, oldest first, as
    :func:`load_segments` gives them) that ended before ``before_ns`` into compacted
    segments of at most ``limit`` events; then delete what each one merged. Every event is
    kept as it was (its time, metadata and chunks): the journal says the same of every
    second before and after. A run of one segment is left as it is. Returns the compacted
    segments committed."""
    old = [s for s in segments if s.to_ns < before_ns]
    runs: list[list[Segment]] = []
    for segment in old:
        if runs and sum(len(s.events) for s in runs[-1]) + len(segment.events) <= limit:
            runs[-1].append(segment)
        else:
            runs.append([segment])
    made = []
    for run in runs:
        if len(run) < 2:
            continue
        hostname = run[0].snapshot.source
        first = run[0].snapshot.record.journal or {}
        at = segments.index(run[0])
        parent = segments[at - 1].snapshot.id if at else None
        writer = SegmentWriter(
            repo,
            tuple(first.get("paths", ())),
            tuple(first.get("exclude", ())),
            parent,
            set(),
            hostname=hostname,
        )
        writer.events = ordered_events(run)
        with writer:
            snapshot = writer.commit(span=(min(s.from_ns for s in run), max(s.to_ns for s in run)))
        for segment in run:
            repo.delete_snapshot(segment.snapshot.id)
        made.append(snapshot)
    return made


def iter_paths(state: dict[str, Entry], roots: Iterable[str]) -> Iterator[str]:
    """The paths of ``state`` at or below one of ``roots``."""
    prefixes = [r.rstrip("/") for r in roots]
    for p in state:
        if any(p == r or p.startswith(r + "/") for r in prefixes):
            yield p
