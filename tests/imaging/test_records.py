"""Typed records: manifests written by real backups read back as types and write back the
same JSON; validation keeps its messages; a ChunkIndex is a list of 32-byte ids."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from imaging.disks.plan import plan_disk
from imaging.errors import FormatError
from imaging.image.backup import backup_path, run_backup
from imaging.image.plan import plan_for
from imaging.repository import codec
from imaging.repository.records import (
    BackupStats,
    ChunkIndex,
    DiskRecord,
    ImageRecord,
    Manifest,
)
from imaging.repository.store import Repository, Snapshot
from tests.imaging.disks import helpers
from tests.support import MiB, sh, write_random_image


def _canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _on_disk(repo: Repository, snapshot_id: str) -> dict[str, Any]:
    """The manifest as the file holds it, decrypted (no record types involved)."""
    data = (repo.path / "snapshots" / f"{snapshot_id}.snap").read_bytes()
    return codec.decode_manifest(data, repo.keys, repo.id, snapshot_id)


def _assert_round_trip(repo: Repository, snapshot: Snapshot) -> Manifest:
    written = _on_disk(repo, snapshot.id)
    record = Manifest.from_dict(written, f"snapshot {snapshot.id}", snapshot.id)
    assert _canonical(record.to_dict()) == _canonical(written)
    assert record == snapshot.record  # what the backup built is what was read back
    assert record.extra == {}, "a backup writes no field that records do not name"
    for image in record.images:
        assert image.extra == {}, image
    assert record.stats.extra == {}
    assert _canonical(Snapshot(written).manifest) == _canonical(written)
    return record


def test_file_backups_round_trip(tmp_path: Path, repo: Repository) -> None:
    source = tmp_path / "source.img"
    write_random_image(source, 5 * MiB + 777)
    first = _assert_round_trip(repo, backup_path(repo, source))
    assert first.parent is None and "parent" in first.to_dict()
    assert first.kind == "file" and first.images[0].name == "data"
    assert first.images[0].method == "raw" and first.images[0].blocks == -(
        -(5 * MiB + 777) // repo.block_size
    )
    stats = first.stats
    assert stats.read == 5 * MiB + 777 == stats.new_bytes + stats.dedup_bytes + stats.zero_bytes
    assert first.time_ns is not None and first.hostname
    second = _assert_round_trip(repo, backup_path(repo, source))
    assert second.parent == first.id
    assert second.stats.new_chunks == 0 and second.stats.stored == 0


@pytest.mark.integration
@pytest.mark.root
def test_filesystem_backup_round_trips(tmp_path: Path, repo: Repository) -> None:
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(24 * MiB)
    sh("mkfs.ext4", "-q", "-F", "-L", "Documents", image)
    record = _assert_round_trip(repo, run_backup(repo, plan_for([str(image)])))
    (data,) = record.images
    assert data.method == "partclone.ext4" and data.fstype == "ext4"
    assert data.label == "Documents" and data.uuid
    assert data.used is not None and 0 < data.used < data.size
    assert record.source_id == f"fs:{data.uuid}"


@pytest.mark.integration
@pytest.mark.root
def test_disk_backups_round_trip(tmp_path: Path, repo: Repository) -> None:
    if not (shutil.which("sgdisk") and shutil.which("partx")):
        pytest.skip("needs sgdisk and partx")
    layout = [
        helpers.GptPart(1, "", 1, "ef02", name="BIOS boot"),
        helpers.GptPart(2, "ext4", 16, "8300", "root", "root"),
    ]
    disk = tmp_path / "disk.img"
    helpers.make_gpt_disk(disk, layout, 20)
    with helpers.attached(disk) as device:
        helpers.make_fs(helpers.node(device, 2), "ext4", "root")
    whole = _assert_round_trip(repo, run_backup(repo, plan_for([str(disk)])))
    assert [i.name for i in whole.images] == ["head", "p1", "p2"]
    p2 = whole.images[2]
    assert (p2.number, p2.fstype, p2.label, p2.type_name) == (2, "ext4", "root", "Linux filesystem")
    assert p2.partuuid and p2.role == "primary"
    assert whole.disk is not None and whole.disk.table is not None
    assert whole.disk.table["type"] == "gpt" and whole.disk.imaged == ()
    some = _assert_round_trip(repo, run_backup(repo, plan_disk(str(disk), only={2})))
    assert some.disk is not None and some.disk.imaged == (2,)
    assert [i.name for i in some.images] == ["head", "p2"]


VALID: dict[str, Any] = {
    "version": 1,
    "id": "ab" * 16,
    "time": "2026-11-22T10:31:05+01:00",
    "source": "s",
    "source_id": "s",
    "kind": "file",
    "size": 1,
    "parent": None,
    "images": [{"name": "data", "offset": 0, "size": 1, "blocks": 1, "index_mac": "0" * 64}],
    "stats": BackupStats().to_dict(),
}


def test_unknown_keys_and_odd_values_survive() -> None:
    written = json.loads(json.dumps(VALID))
    written["future"] = {"nested": [1, 2, {"x": None}]}
    written["warnings"] = []  # not a warning list the record holds: kept as it was
    written["disk"] = {"serial": "S1", "size": "big", "new_disk_field": True}
    written["images"][0] |= {"label": None, "number": True, "used": -1, "later": "yes"}
    written["stats"] |= {"elapsed": 2, "bytes_per_second": 1.5}
    record = Manifest.from_dict(written, "snapshot x", "ab" * 16)
    assert _canonical(record.to_dict()) == _canonical(written)
    image = record.images[0]
    assert (image.label, image.number, image.used) == (None, None, None)
    assert image.extra == {"label": None, "number": True, "used": -1, "later": "yes"}
    assert record.disk == DiskRecord(serial="S1", extra={"size": "big", "new_disk_field": True})
    assert record.stats.elapsed == 2 and record.stats.extra == {"bytes_per_second": 1.5}
    # a copy: changing it changes nothing in the record
    out = record.to_dict()
    out["future"]["nested"].append(3)
    assert record.to_dict()["future"] == {"nested": [1, 2, {"x": None}]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": True}, "snapshot x: the manifest has an unknown version."),
        (
            {"id": "cd" * 16},
            "snapshot x: the manifest has an id that does not match its file name.",
        ),
        ({"kind": "other"}, "snapshot x: the manifest has an unknown kind."),
        ({"images": []}, "snapshot x: the manifest has no images."),
        ({"time": "yesterday"}, "snapshot x: the manifest's time is not ISO 8601."),
        (
            {"images": [{**VALID["images"][0], "name": "../x"}]},
            "snapshot x: the manifest has an invalid or repeated image name.",
        ),
        (
            {"images": [VALID["images"][0], VALID["images"][0]]},
            "snapshot x: the manifest has an invalid or repeated image name.",
        ),
        (
            {"images": [{**VALID["images"][0], "blocks": -1}]},
            "snapshot x: the manifest has an image without a valid blocks.",
        ),
        (
            {"images": [{**VALID["images"][0], "index_mac": "short"}]},
            "snapshot x: the manifest has an image without an index checksum.",
        ),
    ],
)
def test_validation_messages(change: dict[str, Any], message: str) -> None:
    broken = {**VALID, **change}
    for parse in (
        lambda: codec.validate_manifest(broken, "snapshot x", "ab" * 16),
        lambda: Manifest.from_dict(broken, "snapshot x", "ab" * 16),
    ):
        with pytest.raises(FormatError) as caught:
            parse()
        assert caught.value.message == message


def test_an_image_alone_is_validated() -> None:
    assert ImageRecord.from_dict(VALID["images"][0], "snapshot x").size == 1
    with pytest.raises(FormatError, match="an image that is not an object"):
        ImageRecord.from_dict([], "snapshot x")


def test_snapshot_summary_and_images() -> None:
    manifest = {**VALID, "images": [{**VALID["images"][0], "fstype": "ext4", "note": "n"}]}
    snapshot = Snapshot(manifest)
    assert snapshot.image("data").fstype == "ext4"
    assert snapshot.summary()["images"] == [
        {"name": "data", "offset": 0, "size": 1, "fstype": "ext4"}
    ]
    assert snapshot.stored == 0 and snapshot.order[1] == 0


# --- chunk indexes --------------------------------------------------------------------------

A, B = b"\x01" * 32, b"\x02" * 32


def test_chunk_index_reads_ids_without_copying() -> None:
    raw = A + codec.ZERO_ID + B + codec.UNUSED_ID
    index = ChunkIndex(raw)
    assert index.raw is raw
    assert len(index) == 4
    assert (index[0], index[2], index[-1]) == (A, B, codec.UNUSED_ID)
    assert list(index) == [A, codec.ZERO_ID, B, codec.UNUSED_ID]
    assert index.is_zero(1) and index.is_unused(3) and not index.is_unused(0)
    assert ChunkIndex(A + A + B).count(A) == 2
    assert ChunkIndex(b"\x00" + A + b"\x00" * 31).count(A) == 0  # only whole ids count
    assert index == ChunkIndex(bytearray(raw)) and index != ChunkIndex(raw[:32])
    with pytest.raises(IndexError):
        index[4]
    with pytest.raises(IndexError):
        index[-5]
    with pytest.raises(TypeError):
        index[0] = B  # read from a file: immutable
    with pytest.raises(ValueError, match="multiple of 32"):
        ChunkIndex(b"\x00" * 33)


def test_chunk_index_is_filled_in_place() -> None:
    index = ChunkIndex.empty(3)
    assert len(index) == 3 and index.raw == bytes(96)
    buffer = index.raw
    index[1] = A
    index[-1] = B
    assert index.raw is buffer and bytes(buffer) == codec.ZERO_ID + A + B
    with pytest.raises(ValueError, match="32 bytes"):
        index[0] = b"short"
    with pytest.raises(IndexError):
        index[3] = A
    assert len(ChunkIndex.empty(0)) == 0 and list(ChunkIndex.empty(0)) == []


def test_load_index_gives_what_write_index_stored(tmp_path: Path, repo: Repository) -> None:
    source = tmp_path / "source.img"
    write_random_image(source, 3 * MiB)
    snapshot = backup_path(repo, source)
    index = repo.load_index(snapshot, "data")
    image = snapshot.image("data")
    assert isinstance(index, ChunkIndex) and len(index) == image.blocks
    # written back, the index is the same file: its MAC is the one the manifest holds
    assert repo.write_index(snapshot.id, "data", index, image.size) == image.index_mac
