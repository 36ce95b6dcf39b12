"""Journal segments without the agent: written, read back, replayed, restored; a journal
that names paths it must not is refused before anything is written outside DEST."""

from __future__ import annotations

import io
import os
import stat
import time
from datetime import datetime
from pathlib import Path

import pytest

from imaging.errors import IntegrityError, UsageError
from imaging.journal.records import Event, Meta
from imaging.journal.restore import restore_at
from imaging.journal.segments import SegmentWriter, load_segments, ordered_events, replay
from imaging.repository.stats import collect
from imaging.repository.store import Repository


def _meta(ftype: str, size: int = 0, target: str | None = None) -> Meta:
    mode = {"file": stat.S_IFREG | 0o644, "dir": stat.S_IFDIR | 0o755}.get(
        ftype, stat.S_IFLNK | 0o777
    )
    return Meta(
        ftype=ftype, mode=mode, uid=0, gid=0, size=size, mtime_ns=time.time_ns(), target=target
    )


def _segment(repo: Repository, events: list[tuple[str, str, bytes | str | None]]) -> None:
    with SegmentWriter(repo, ("/h",), (), None, set()) as w:
        ns = time.time_ns() - 10**9
        for kind, path, content in events:
            ns += 1
            if kind == "file":
                data = content if isinstance(content, bytes) else b""
                ids, size, new = w.store(io.BytesIO(data))
                w.add(
                    Event(
                        ns=ns,
                        type="write",
                        path=path,
                        meta=_meta("file", size),
                        chunks=ids,
                        new=new,
                    )
                )
            elif kind == "dir":
                w.add(Event(ns=ns, type="create", path=path, meta=_meta("dir")))
            elif kind == "symlink":
                w.add(
                    Event(
                        ns=ns, type="create", path=path, meta=_meta("symlink", target=str(content))
                    )
                )
            elif kind == "rename":
                w.add(Event(ns=ns, type="rename", path=path, to=str(content)))
            else:
                w.add(Event(ns=ns, type=kind, path=path))
        w.commit()


def test_written_read_and_replayed(repo: Repository, tmp_path: Path) -> None:
    big = os.urandom(3 << 20)
    _segment(
        repo,
        [
            ("dir", "/h/d", None),
            ("file", "/h/d/big", big),
            ("file", "/h/d/x", b"x"),
            ("rename", "/h/d", "/h/e"),
            ("delete", "/h/e/x", None),
        ],
    )
    [segment] = load_segments(repo)
    assert segment.snapshot.kind == "journal"
    state = replay(ordered_events([segment]))
    assert sorted(state) == ["/h/e", "/h/e/big"]
    assert len(state["/h/e/big"].chunks) > 10  # content-defined chunks, not one block
    restore_at(repo, ["/h/e"], datetime.now().astimezone(), str(tmp_path / "out"))
    assert (tmp_path / "out" / "e" / "big").read_bytes() == big
    info = collect(repo)  # `hourglass info`: the versions' bytes, not index entries x blocks
    assert info.logical_bytes == len(big) + 1
    assert len(big) - 256 * 1024 <= info.unique_bytes <= len(big) + 1


def test_a_path_with_dot_dot_is_refused(repo: Repository, tmp_path: Path) -> None:
    _segment(repo, [("dir", "/h/d", None), ("file", "/h/d/../../escape", b"no")])
    with pytest.raises(IntegrityError):
        restore_at(repo, ["/h/d"], datetime.now().astimezone(), str(tmp_path / "out"))
    assert not (tmp_path / "escape").exists()


def test_nothing_is_written_through_a_symlink(repo: Repository, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    _segment(
        repo,
        [
            ("dir", "/h/d", None),
            ("symlink", "/h/d/link", str(outside)),
            ("file", "/h/d/link/evil", b"no"),
        ],
    )
    with pytest.raises(IntegrityError):
        restore_at(repo, ["/h/d"], datetime.now().astimezone(), str(tmp_path / "out"))
    assert not (outside / "evil").exists()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "d").symlink_to(outside)  # DEST already holds a link where the tree goes
    with pytest.raises(UsageError):
        restore_at(repo, ["/h/d"], datetime.now().astimezone(), str(dest))
    assert os.listdir(outside) == []


def test_the_app_and_image_commands_do_not_see_segments(repo: Repository) -> None:
    from imaging.files.images import file_images
    from imaging.jobs.repositories import list_snapshots

    _segment(repo, [("file", "/h/a", b"a")])
    [segment] = load_segments(repo)
    assert file_images(segment.snapshot) == []
    assert list(list_snapshots(repo).snapshots) == []
    assert [s.kind for s in repo.snapshots()] == ["journal"]
