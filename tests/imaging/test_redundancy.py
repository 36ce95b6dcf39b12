"""Repositories over several locations (copies, K+M shards over directories and buckets) and
`hourglass check`: round trips, lost and damaged members, repair, replacement."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from imaging import jobs
from imaging.errors import HourglassError
from imaging.image.backup import backup_path
from imaging.image.restore import restore_snapshot
from imaging.repository import verify
from imaging.repository.redundant import (
    DESCRIPTOR,
    RedundantStore,
    check_shard,
    decode_shards,
    encode_shards,
)
from imaging.repository.s3store import S3Store
from imaging.repository.storage import Kind, LocalStore, chunk
from imaging.repository.store import Repository
from tests.conftest import PASSPHRASE
from tests.s3server import S3Server
from tests.support import MiB, run_cli, write_random_image

NAME = chunk(bytes(range(32)))


def change_some_blocks(path: Path) -> None:
    with open(path, "r+b") as f:
        for n in range(4):
            f.seek(n * 2 * MiB + 100)
            f.write(os.urandom(5000))


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def chunk_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "chunks").rglob("*") if p.is_file())


@pytest.fixture
def passfile(tmp_path: Path) -> Path:
    path = tmp_path / "pass"
    path.write_text(PASSPHRASE)
    return path


def test_shards_decode_from_any_k() -> None:
    for k, m in ((2, 1), (4, 2), (3, 3)):
        for size in (0, 1, k, 4097, 100_003):
            data = os.urandom(size)
            shards = encode_shards(data, k, m, NAME)
            assert all(check_shard(s, k, m, i, NAME) is None for i, s in enumerate(shards))
            # The last K shards (parity among them) rebuild the object.
            last = {i: shards[i] for i in range(m, k + m)}
            assert decode_shards(last, k, m) == data
    bad = bytearray(encode_shards(b"hello world", 2, 1, NAME)[1])
    bad[50] ^= 1
    assert check_shard(bytes(bad), 2, 1, 1, NAME) == "its checksum does not match (bit rot)"
    assert "not shard 0" in str(check_shard(encode_shards(b"x", 2, 1, NAME)[1], 2, 1, 0, NAME))
    # A shard names its object: the same bytes of two objects are two different shards.
    other = chunk(bytes(32))
    same = b"\0" * 1000
    assert encode_shards(same, 2, 1, NAME)[0] != encode_shards(same, 2, 1, other)[0]
    assert check_shard(encode_shards(same, 2, 1, other)[0], 2, 1, 0, NAME) == (
        "a shard of another object"
    )


def test_copies_on_two_directories(
    tmp_path: Path, passfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    pw = ("--passphrase-file", str(passfile))
    assert run_cli("init", "--redundancy", "copies", str(a), str(b), *pw) == 0
    source = tmp_path / "source.img"
    write_random_image(source, 12 * MiB + 777)
    assert run_cli("backup", "--repo", str(a), *pw, str(source)) == 0
    first = source.read_bytes()
    change_some_blocks(source)
    assert run_cli("backup", "--repo", str(b), *pw, str(source)) == 0
    # Both members hold every object, byte for byte: each is a whole repository.
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    chunks = [n for n in names if n.startswith("chunks/")]
    assert chunks
    for name in names:
        if name.startswith(("chunks/", "snapshots/", "indexes/", "keys/")) or name == "config":
            assert (b / name).read_bytes() == (a / name).read_bytes(), name

    repo = Repository.open(b, PASSPHRASE)
    assert isinstance(repo.store, RedundantStore)
    older, newer = repo.snapshots()
    assert newer.manifest["parent"] == older.id
    for snapshot, expected in ((older, first), (newer, source.read_bytes())):
        out = tmp_path / f"{snapshot.id}.img"
        assert restore_snapshot(repo, snapshot, out).verified
        assert out.read_bytes() == expected
    capsys.readouterr()
    assert run_cli("snapshots", "--repo", str(a), *pw) == 0
    assert older.id[:12] in capsys.readouterr().out
    assert run_cli("verify", "--read-data", "--repo", str(a), *pw) == 0
    assert run_cli("check", "--repo", str(b), "--read-data") == 0
    out = capsys.readouterr().out
    assert "member 0" in out and "member 1" in out and "OK" in out

    # No restore writes into any member, whichever member opened the set.
    assert run_cli("restore", "--repo", str(a), *pw, "--yes", "latest", str(b / "x.img")) == 6
    assert not (b / "x.img").exists()

    # One copy lost entirely: reads go on from the other and say which member is missing.
    shutil.rmtree(a)
    capsys.readouterr()
    target = tmp_path / "again.img"
    assert run_cli("restore", "--repo", str(b), *pw, "--yes", "latest", str(target)) == 0
    assert target.read_bytes() == source.read_bytes()
    assert f"WARNING read around member 0 ({a})" in capsys.readouterr().err
    result = jobs.restore(
        Repository.open(b, PASSPHRASE),
        jobs.RestoreRequest(snapshot="latest", target=str(target)),
        confirm=jobs.no_confirm,
    )
    assert result.verified and result.degraded and str(a) in result.degraded[0]
    # A backup refuses to leave a member behind, and names it.
    with pytest.raises(HourglassError, match=f"Member 0 .*{a}"):
        backup_path(Repository.open(b, PASSPHRASE), source)
    assert run_cli("check", "--repo", str(b)) == 3
    assert "unreachable" in capsys.readouterr().out
    # Not made again where it was (an unmounted drive's mount point): the person says where.
    assert run_cli("check", "--repo", str(b), "--repair") == 3
    assert "--replace 0=DIRECTORY" in capsys.readouterr().out
    assert not a.exists()
    assert run_cli("check", "--repo", str(b), "--repair", "--replace", f"0={a}") == 0
    assert run_cli("check", "--repo", str(a), "--read-data") == 0
    assert run_cli("verify", "--read-data", "--repo", str(a), *pw) == 0


def test_k_plus_m_refuses_the_wrong_number_of_locations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    places = [str(tmp_path / n) for n in "abcd"]
    plain = ("--encryption", "none")
    assert run_cli("init", "--redundancy", "2+1", *places[:2], *plain) == 2
    assert "exactly 3 locations" in capsys.readouterr().err
    assert run_cli("init", "--redundancy", "2+1", *places, *plain) == 2
    assert run_cli("init", "--redundancy", "copies", places[0], *plain) == 2
    assert run_cli("init", "--redundancy", "2-1", *places[:3], *plain) == 2
    assert run_cli("init", places[0], places[1], *plain) == 2
    assert not any(Path(p).exists() for p in places)
    # A used location is refused too, before anything is written anywhere.
    Path(places[2]).mkdir()
    (Path(places[2]) / "photo.jpg").write_bytes(b"x")
    assert run_cli("init", "--redundancy", "2+1", *places[:3], *plain) == 2
    assert not Path(places[0]).exists()


def _bucket_store(server: S3Server, bucket: str) -> S3Store:
    return S3Store(bucket, "pc1", client=server.client())


def _empty_and_delete(client: Any, bucket: str) -> None:
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    for item in listing:
        client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)


@pytest.mark.s3
@pytest.mark.faults
def test_two_plus_one_over_directories_and_buckets(
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
    passfile: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    local = tmp_path / "usb"
    buckets = [f"{s3_bucket}-x", f"{s3_bucket}-y"]
    urls = [f"s3://{b}/pc1" for b in buckets]
    pw = ("--passphrase-file", str(passfile))
    assert run_cli("init", "--redundancy", "2+1", str(local), *urls, *pw) == 0
    # Every member names the others; shard i lives on member i.
    descriptor = json.loads((local / "redundancy.json").read_text())
    assert descriptor["scheme"] == "2+1" and descriptor["member"] == 0
    assert [m["location"] for m in descriptor["members"]] == [str(local), *urls]

    source = tmp_path / "source.img"
    write_random_image(source, 16 * MiB + 4096 + 5)
    repo = Repository.open(urls[1], PASSPHRASE)  # opened through a bucket
    first = backup_path(repo, source)
    original = source.read_bytes()
    change_some_blocks(source)
    second = backup_path(repo, source)
    assert second.manifest["parent"] == first.id and second.manifest["stats"]["new_chunks"] <= 8
    # The directory holds shards, about half a chunk each; the buckets pack theirs.
    shards = chunk_files(local)
    assert shards and all(p.read_bytes()[:4] == b"HGSH" for p in shards)
    stored = sum(p.stat().st_size for p in shards)
    assert stored < 0.6 * sum(len(repo.store.get(i.name)) for i in repo.store.list(Kind.CHUNKS))
    for bucket in buckets:
        keys = [
            o["Key"]
            for o in repo.store.members[1].client.list_objects_v2(Bucket=bucket)["Contents"]
        ]
        assert any("/packs/" in k for k in keys) and not any("/chunks/" in k for k in keys)

    reopened = Repository.open(local, PASSPHRASE)  # opened through the directory
    for snapshot, expected in ((first, original), (second, source.read_bytes())):
        out = tmp_path / f"{snapshot.id}.img"
        assert restore_snapshot(reopened, snapshot, out).verified
        assert out.read_bytes() == expected
    assert verify.verify(reopened, read_data=True).ok
    assert run_cli("check", "--repo", urls[0]) == 0

    # Fault 1: member 1's bucket is gone. Restores go on from the others and name it.
    client = s3_server.client()
    _empty_and_delete(client, buckets[0])
    degraded = Repository.open(urls[1], PASSPHRASE)
    out = tmp_path / "degraded.img"
    assert restore_snapshot(degraded, degraded.snapshots()[-1], out).verified
    assert out.read_bytes() == source.read_bytes()
    assert f"member 1 ({urls[0]})" in "\n".join(degraded.store.degraded())
    capsys.readouterr()
    assert run_cli("verify", "--repo", str(local), *pw) == 0
    assert urls[0] in capsys.readouterr().err  # the CLI's warning names the missing member
    assert run_cli("check", "--repo", urls[1]) == 3
    assert f"member 1 {urls[0]}: unreachable" in capsys.readouterr().out
    assert run_cli("check", "--repo", urls[1], "--repair") == 0  # makes the bucket again
    assert "rebuilt" in capsys.readouterr().out
    assert run_cli("check", "--repo", urls[0], "--read-data") == 0
    assert run_cli("verify", "--read-data", "--repo", urls[0], *pw) == 0

    # Fault 2: a shard in the directory is damaged (same size: only reading finds it).
    degraded = Repository.open(urls[1], PASSPHRASE)
    needed = {i.hex() for i in degraded.load_index(degraded.snapshots()[-1], "data")}
    victim = next(p for p in shards if p.name in needed)  # a shard the restore reads
    flip_a_byte(victim)
    assert restore_snapshot(degraded, degraded.snapshots()[-1], out).verified
    assert out.read_bytes() == source.read_bytes()
    assert f"member 0 ({local})" in "\n".join(degraded.store.degraded())
    capsys.readouterr()
    assert run_cli("check", "--repo", urls[1]) == 0
    assert run_cli("check", "--repo", urls[1], "--read-data") == 3
    found = capsys.readouterr().out
    assert f"member 0 {local}: damaged" in found
    assert victim.name in found and "bit rot" in found
    assert run_cli("check", "--repo", urls[1], "--read-data", "--repair") == 0
    assert run_cli("check", "--repo", urls[0], "--read-data") == 0
    assert run_cli("verify", "--read-data", "--repo", urls[0], *pw) == 0
    healed = Repository.open(urls[0], PASSPHRASE)
    assert restore_snapshot(healed, healed.snapshots()[-1], out).verified
    assert out.read_bytes() == source.read_bytes()
    assert healed.store.degraded() == []

    # A damaged shard inside a bucket's pack: the repair writes that pack's shards again.
    bucket_store = _bucket_store(s3_server, buckets[1])
    pack = bucket_store.pack_names()[0]
    key = f"pc1/packs/{pack}"
    body = bytearray(client.get_object(Bucket=buckets[1], Key=key)["Body"].read())
    body[len(body) // 3] ^= 0x01
    client.put_object(Bucket=buckets[1], Key=key, Body=bytes(body))
    assert run_cli("check", "--repo", str(local), "--read-data", "--repair") == 0
    assert run_cli("check", "--repo", str(local), "--read-data") == 0


def test_replace_a_lost_member(
    tmp_path: Path, passfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, c, new = (tmp_path / n for n in ("a", "b", "c", "new"))
    pw = ("--passphrase-file", str(passfile))
    assert run_cli("init", "--redundancy", "2+1", str(a), str(b), str(c), *pw) == 0
    source = tmp_path / "source.img"
    write_random_image(source, 6 * MiB)
    backup_path(Repository.open(a, PASSPHRASE), source)
    # --read-data=50 reads half the objects on every member, the next run the other half.
    halves = [jobs.check(a, jobs.CheckRequest(read_percent=50)) for _ in range(2)]
    total = halves[0].objects
    assert all(h.ok for h in halves) and total > 3
    assert halves[0].read + halves[1].read == 3 * total
    flip_a_byte(chunk_files(b)[0])
    found = [jobs.check(a, jobs.CheckRequest(read_percent=50)).ok for _ in range(2)]
    assert sorted(found) == [False, True]  # one of two runs reads it
    assert run_cli("check", "--repo", str(a), "--read-data", "--repair") == 0

    # A truncated shard is found without reading data (its size), and rebuilt.
    victim = chunk_files(c)[0]
    victim.write_bytes(victim.read_bytes()[:100])
    capsys.readouterr()
    assert run_cli("check", "--repo", str(a)) == 3
    assert f"member 2 {c}: damaged: chunks/" in capsys.readouterr().out
    assert run_cli("check", "--repo", str(a), "--repair") == 0
    # Member 1 lost for good: an empty directory takes its place.
    shutil.rmtree(b)
    assert run_cli("check", "--repo", str(a)) == 3
    found = capsys.readouterr().out
    assert f"member 1 {b}: unreachable" in found
    assert run_cli("check", "--repo", str(a), "--replace", f"1={new}") == 2  # needs --repair
    assert run_cli("check", "--repo", str(a), "--repair", "--replace", f"1={new}") == 0
    # Every member now names the new location, in member 1's place.
    for root in (a, new, c):
        record = json.loads((root / "redundancy.json").read_text())
        assert record["members"][1]["location"] == str(new) and record["generation"] == 2
    repo = Repository.open(new, PASSPHRASE)
    out = tmp_path / "out.img"
    assert restore_snapshot(repo, repo.snapshots()[0], out).verified
    assert out.read_bytes() == source.read_bytes()
    assert repo.store.degraded() == []
    assert run_cli("check", "--repo", str(c), "--read-data") == 0
    assert isinstance(repo.store, RedundantStore)
    assert [type(m) for m in repo.store.members] == [LocalStore] * 3
    assert repo.store.members[1].get(DESCRIPTOR)

    # Two shards of one chunk lost in a 2+1 set: the repair says so, and exits 3.
    shutil.rmtree(new)
    flip_a_byte(chunk_files(c)[0])
    capsys.readouterr()
    assert run_cli("check", "--repo", str(a), "--read-data", "--repair") == 3
    assert "cannot be rebuilt" in capsys.readouterr().out


def test_check_a_plain_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "repo"
    repo = Repository.init(root, encryption="none")
    source = tmp_path / "source.img"
    write_random_image(source, 9 * MiB)
    backup_path(repo, source)
    assert run_cli("check", "--repo", str(root)) == 0
    assert run_cli("check", "--repo", str(root), "--read-data") == 0
    assert run_cli("check", "--repo", str(root), "--repair") == 2  # nothing to repair from
    victim = chunk_files(root)[0]
    flip_a_byte(victim)
    capsys.readouterr()
    assert run_cli("check", "--repo", str(root)) == 0  # same size: only reading finds it
    assert run_cli("check", "--repo", str(root), "--read-data") == 3
    assert victim.name in capsys.readouterr().out
    victim.write_bytes(b"short")
    assert run_cli("check", "--repo", str(root)) == 3
    assert "truncated" in capsys.readouterr().out


def test_forget_and_gc_on_a_set(
    tmp_path: Path, passfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    places = [tmp_path / n for n in "abc"]
    pw = ("--passphrase-file", str(passfile))
    assert run_cli("init", "--redundancy", "2+1", *map(str, places), *pw) == 0
    source = tmp_path / "source.img"
    write_random_image(source, 12 * MiB, zero_every=0)
    repo = Repository.open(places[2], PASSPHRASE)
    first = backup_path(repo, source)
    write_random_image(source, 12 * MiB, seed=7, zero_every=0)
    second = backup_path(repo, source)
    before = [len(chunk_files(p)) for p in places]
    assert run_cli("forget", "--repo", str(places[0]), *pw, "--yes", first.id) == 0
    capsys.readouterr()
    assert run_cli("gc", "--repo", str(places[1]), *pw) == 0
    assert "Freed" in capsys.readouterr().out
    after = [len(chunk_files(p)) for p in places]
    # Every member freed the same shards: those only the forgotten snapshot needed.
    assert after[0] == after[1] == after[2] < before[0]
    repo = Repository.open(places[0], PASSPHRASE)
    assert [s.id for s in repo.snapshots()] == [second.id]
    out = tmp_path / "out.img"
    assert restore_snapshot(repo, repo.snapshots()[0], out).verified
    assert out.read_bytes() == source.read_bytes()
    assert run_cli("check", "--repo", str(places[0]), "--read-data") == 0


@pytest.mark.s3
def test_forget_and_gc_on_a_set_with_buckets(
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
    passfile: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """gc on a 2+1 set of a directory and two buckets: every member frees what only the
    forgotten snapshot needed (the directory its shard files, each bucket its packs, by
    superseding them, repacking where some chunks live on), and what is left restores and
    reads clean from any member."""
    local = tmp_path / "usb"
    buckets = [f"{s3_bucket}-gx", f"{s3_bucket}-gy"]
    urls = [f"s3://{b}/pc1" for b in buckets]
    pw = ("--passphrase-file", str(passfile))
    assert run_cli("init", "--redundancy", "2+1", str(local), *urls, *pw) == 0
    source = tmp_path / "source.img"
    write_random_image(source, 12 * MiB, zero_every=0)
    repo = Repository.open(local, PASSPHRASE)
    first = backup_path(repo, source)
    write_random_image(source, 12 * MiB, seed=7, zero_every=0)
    second = backup_path(repo, source)
    live_before = [len(_bucket_store(s3_server, b).pack_names()) for b in buckets]
    shards_before = len(chunk_files(local))
    assert run_cli("forget", "--repo", urls[0], *pw, "--yes", first.id) == 0
    capsys.readouterr()
    assert run_cli("gc", "--repo", urls[1], *pw) == 0
    out = capsys.readouterr().out
    assert "Freed" in out, out
    assert len(chunk_files(local)) < shards_before
    for bucket, before in zip(buckets, live_before, strict=True):
        # the forgotten snapshot's pack is no longer in the bucket's chunk map
        after = _bucket_store(s3_server, bucket).pack_names()
        assert len(after) < before, (before, after)
    for location in (urls[0], urls[1], str(local)):
        reopened = Repository.open(location, PASSPHRASE)
        assert [s.id for s in reopened.snapshots()] == [second.id]
        restored = tmp_path / "restored.img"
        restored.unlink(missing_ok=True)
        assert restore_snapshot(reopened, reopened.snapshots()[0], restored).verified
        assert restored.read_bytes() == source.read_bytes()
    assert run_cli("check", "--repo", urls[0], "--read-data") == 0
    assert run_cli("check", "--repo", str(local), "--read-data") == 0


@pytest.mark.s3
def test_check_a_plain_bucket(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"s3://{s3_bucket}/pc1"
    repo = Repository.init(url, encryption="none")
    source = tmp_path / "source.img"
    write_random_image(source, 9 * MiB)
    backup_path(repo, source)
    assert run_cli("check", "--repo", url) == 0
    # A pack gone from the listing while its index stays: its chunks are named, unread.
    store = _bucket_store(s3_server, s3_bucket)
    (pack,) = store.pack_names()
    s3_server.client().delete_object(Bucket=s3_bucket, Key=f"pc1/packs/{pack}")
    capsys.readouterr()
    assert run_cli("check", "--repo", url) == 3
    found = capsys.readouterr().out
    assert f"its pack {pack[:16]}… is missing" in found
