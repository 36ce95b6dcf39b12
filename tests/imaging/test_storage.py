"""LocalStore: named objects in the directory layout of docs/FORMAT.md, on a real filesystem."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from imaging.repository import storage
from imaging.repository.storage import Kind, LocalStore, Name
from imaging.repository.store import LAYOUT

CHUNK_ID = bytes(range(32))


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    local = LocalStore(tmp_path / "repo")
    local.create((*LAYOUT, Kind.KEYS))
    return local


def keys_of(store: LocalStore, kind: Kind, prefix: str = "") -> list[str]:
    return sorted(info.name.key for info in store.list(kind, prefix))


def test_names_keep_the_layout(store: LocalStore) -> None:
    root = store.path
    hexid = CHUNK_ID.hex()
    assert store.path_of(storage.CONFIG) == root / "config"
    assert store.path_of(storage.chunk(CHUNK_ID)) == root / "chunks/00/01" / hexid
    assert store.path_of(storage.snapshot("ab" * 16)) == root / "snapshots" / f"{'ab' * 16}.snap"
    assert (
        store.path_of(storage.index("ab" * 16, "p1")) == root / "indexes" / ("ab" * 16) / "p1.idx"
    )
    assert store.path_of(storage.key_slot("cafe")) == root / "keys/cafe.key"
    assert store.path_of(storage.VERIFY_STATE) == root / "verify/state.json"
    assert store.path_of(storage.trashed("1-2", hexid)) == root / "trash/1-2/00/01" / hexid
    assert store.describe(Kind.KEYS) == str(root / "keys")
    assert stat.S_IMODE((root / "keys").stat().st_mode) & 0o077 == 0


def test_put_replaces_atomically_and_leaves_no_temporary_file(store: LocalStore) -> None:
    name = storage.snapshot("ab" * 16)
    assert store.put(name, b"first")
    assert store.put(name, b"sec", b"ond")  # parts are written one after the other
    assert store.get(name) == b"second"
    assert os.listdir(store.tmp_dir) == []  # manifests waited in tmp/ and were renamed
    assert keys_of(store, Kind.SNAPSHOTS) == ["ab" * 16]


def test_put_if_absent_never_replaces(store: LocalStore) -> None:
    name = storage.key_slot("0123")
    assert store.put(name, b"one", if_absent=True)
    assert not store.put(name, b"two", if_absent=True)
    assert store.get(name) == b"one"
    assert os.listdir(store.path / "keys") == ["0123.key"]  # the refused copy is gone
    assert stat.S_IMODE(store.path_of(name).stat().st_mode) == 0o600


def test_rename_noreplace_refuses_an_existing_target(tmp_path: Path) -> None:
    source, dest = tmp_path / "source", tmp_path / "dest"
    source.write_bytes(b"new")
    dest.write_bytes(b"old")
    assert not storage.rename_noreplace(source, dest)
    assert dest.read_bytes() == b"old" and source.exists()
    dest.unlink()
    assert storage.rename_noreplace(source, dest)
    assert dest.read_bytes() == b"new" and not source.exists()


def test_ranged_get_size_and_stat(store: LocalStore) -> None:
    name = storage.index("ab" * 16, "data")
    store.put(name, bytes(range(100)))
    assert store.get_range(name, 10, 5) == bytes(range(10, 15))
    assert store.get_range(name, 95, 50) == bytes(range(95, 100))  # short at the end
    assert store.get_range(name, 200, 5) == b""
    assert store.size(name) == 100
    assert store.stat(name).mtime == store.path_of(name).stat().st_mtime
    with pytest.raises(FileNotFoundError):
        store.get_range(storage.index("cd" * 16, "data"), 0, 1)


def test_list_by_prefix(store: LocalStore) -> None:
    ids = [bytes([first]) + bytes(31) for first in (0x00, 0x01, 0x10)]
    for chunk_id in ids:
        store.put(storage.chunk(chunk_id), b"x" * chunk_id[0])
    assert keys_of(store, Kind.CHUNKS) == sorted(c.hex() for c in ids)
    assert keys_of(store, Kind.CHUNKS, "0") == [ids[0].hex(), ids[1].hex()]
    assert keys_of(store, Kind.CHUNKS, "01") == [ids[1].hex()]
    assert {info.name.key: info.size for info in store.list(Kind.CHUNKS)}[ids[2].hex()] == 16
    for snapshot_id, image in (("aa" * 16, "p1"), ("aa" * 16, "p2"), ("bb" * 16, "p1")):
        store.put(storage.index(snapshot_id, image), b"i")
    assert keys_of(store, Kind.INDEXES, f"{'aa' * 16}/") == [f"{'aa' * 16}/p1", f"{'aa' * 16}/p2"]
    assert len(keys_of(store, Kind.INDEXES)) == 3
    assert sorted(g.name.key for g in store.groups(Kind.INDEXES)) == ["aa" * 16, "bb" * 16]
    store.delete_group(Kind.INDEXES, "aa" * 16)
    assert keys_of(store, Kind.INDEXES) == [f"{'bb' * 16}/p1"]


def test_a_missing_kind_directory_is_not_an_empty_listing(store: LocalStore) -> None:
    (store.path / "snapshots").rmdir()
    with pytest.raises(FileNotFoundError):
        list(store.list(Kind.SNAPSHOTS))
    assert not store.has_kind(Kind.SNAPSHOTS)


def test_leftovers_of_a_crash_are_not_listed(store: LocalStore) -> None:
    """A put that died before its rename leaves a temporary file: no listing shows it."""
    store.put(storage.key_slot("aa"), b"slot")
    (store.path / "keys" / ".tmp-0123456789abcdef").write_bytes(b"half a slot")
    (store.tmp_dir / "c-0123456789abcdef").write_bytes(b"half a chunk")
    (store.path / "chunks" / "00" / "01").mkdir(parents=True)
    (store.path / "chunks" / "00" / "01" / ".tmp-0123").write_bytes(b"half")
    assert keys_of(store, Kind.KEYS) == ["aa"]
    assert keys_of(store, Kind.CHUNKS) == []
    assert keys_of(store, Kind.SNAPSHOTS) == []


def test_delete_says_whether_it_was_there(store: LocalStore) -> None:
    name = storage.snapshot("ab" * 16)
    store.put(name, b"m")
    assert store.delete(name)
    assert not store.exists(name)
    assert not store.delete(name)


def test_move_into_trash_and_read_it_set_aside(store: LocalStore) -> None:
    name = storage.chunk(CHUNK_ID)
    store.put(name, b"chunk")
    store.make_group(Kind.TRASH, "1-1")
    assert store.move(name, storage.trashed("1-1", name.key))
    assert not store.exists(name)
    assert store.get_set_aside(name) == b"chunk"
    assert keys_of(store, Kind.TRASH, "1-1/") == [f"1-1/{name.key}"]
    assert store.trash_batches() == ["1-1"]
    store.delete_group(Kind.TRASH, "1-1")
    with pytest.raises(FileNotFoundError):
        store.get_set_aside(name)


def test_chunk_batch_flush_gives_names_and_discard_leaves_nothing(store: LocalStore) -> None:
    first, second = CHUNK_ID, bytes(32)
    assert store.put_chunk(first, b"one")
    if store.batched:
        assert not store.exists(storage.chunk(first))  # waits in tmp/ for the syncfs
        assert len(os.listdir(store.tmp_dir)) == 1
    store.flush_chunks()
    store.sync_chunks()
    assert store.get(storage.chunk(first)) == b"one"
    assert not store.put_chunk(first, b"one")  # already stored
    assert store.put_chunk(second, b"two")
    store.discard_chunks()
    assert os.listdir(store.tmp_dir) == []
    assert store.exists(storage.chunk(second)) is not store.batched
    assert keys_of(store, Kind.CHUNKS) == sorted(
        c.hex() for c in ([first] if store.batched else [first, second])
    )


def test_an_object_name_renders_as_its_path_in_the_repository() -> None:
    assert str(Name(Kind.INDEXES, "ab/p1")) == "indexes/ab/p1.idx"
    assert str(storage.CONFIG) == "config"
