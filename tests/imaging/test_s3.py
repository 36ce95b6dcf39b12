"""Repositories in an S3 bucket, against the suite's own Ceph radosgw (tests/s3server.sh):
round trips, incrementals, verify, requests per GiB, damage in a pack, locations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imaging.image.backup import backup_path
from imaging.image.restore import restore_snapshot
from imaging.repository import leases, s3gc, verify
from imaging.repository.s3store import PACK_BYTES, S3Store
from imaging.repository.storage import Kind, Name, chunk
from imaging.repository.store import Repository
from tests.conftest import PASSPHRASE
from tests.s3server import S3Server, running
from tests.support import (
    MiB,
    fill_with_files,
    hourglass_subprocess,
    loop_device,
    mounted,
    run_cli,
    same_file,
    sh,
    tree_digest,
    write_random_image,
)

s3 = pytest.mark.s3


def pack_indexes(client: Any, bucket: str) -> list[str]:
    listing = client.list_objects_v2(Bucket=bucket, Prefix="packs/")
    return [o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith(".idx")]


def backup_past_its_first_pack(
    client: Any, bucket: str, source: Path, env: dict[str, str], *, stderr: int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """`hourglass backup` of ``source`` into s3://``bucket`` in a child process, returned
    once its first pack index is in the bucket and it is still running."""
    child = hourglass_subprocess(
        "backup",
        "--repo",
        f"s3://{bucket}",
        "--progress",
        "none",
        str(source),
        env={**env, "HOURGLASS_STATE_DIR": "none"},
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    deadline = time.monotonic() + 120
    while not pack_indexes(client, bucket) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if child.poll() is not None:
        child.wait()
        raise AssertionError("the backup ended before its first pack was written")
    return child


def make_ext4(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
    sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", path)


GiB = 1024 * MiB


class Requests:
    """Every HTTP request a client sends (retries too), by operation."""

    def __init__(self, client: Any) -> None:
        self.by_operation: Counter[str] = Counter()
        self.pack_reads = 0
        client.meta.events.register("before-send.s3", self._count)

    def _count(self, **kwargs: Any) -> None:
        event = str(kwargs.get("event_name", ""))
        self.by_operation[event.rsplit(".", 1)[-1]] += 1
        request = kwargs.get("request")
        url = str(getattr(request, "url", ""))
        if "/packs/" in url and not url.split("?", maxsplit=1)[0].endswith(".idx"):
            self.pack_reads += 1

    @property
    def total(self) -> int:
        return sum(self.by_operation.values())

    def reset(self) -> None:
        self.by_operation.clear()
        self.pack_reads = 0


def counted_store(server: S3Server, bucket: str, prefix: str = "") -> tuple[S3Store, Requests]:
    client = server.client()
    return S3Store(bucket, prefix, client=client), Requests(client)


def change_one_percent(path: Path) -> None:
    """Overwrite 1 % of the image, in 64 KiB pieces spread over it."""
    size = path.stat().st_size
    piece = 64 * 1024
    count = max(1, size // 100 // piece)
    with open(path, "r+b") as f:
        for n in range(count):
            f.seek(n * (size // count))
            f.write(os.urandom(piece))


@s3
def test_round_trip_incremental_verify(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"s3://{s3_bucket}/machines/pc1"
    store = S3Store(s3_bucket, "machines/pc1", client=s3_server.client())
    repo = Repository.init(store, passphrase=PASSPHRASE)
    source = tmp_path / "source.img"
    write_random_image(source, 64 * MiB + 4096 + 17)
    first = backup_path(repo, source)
    original = source.read_bytes()
    change_one_percent(source)
    second = backup_path(repo, source)
    assert second.manifest["parent"] == first.id
    # Only the changed blocks are new: ten 64 KiB pieces touch at most ten 1 MiB blocks.
    assert 0 < second.manifest["stats"]["new_chunks"] <= 10
    # Nothing but packs and their indexes hold chunks: no object per chunk.
    keys = [o["Key"] for o in store.client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert not [k for k in keys if "/chunks/" in k]
    packs = [k for k in keys if k.startswith("machines/pc1/packs/") and not k.endswith(".idx")]
    assert len(packs) == 2 and all(f"{k}.idx" in keys for k in packs)

    # A fresh open (another process) finds every chunk through the pack indexes.
    reopened = Repository.open(S3Store(s3_bucket, "machines/pc1"), PASSPHRASE)
    for snapshot, expected in ((first, original), (second, source.read_bytes())):
        out = tmp_path / f"{snapshot.id}.img"
        assert restore_snapshot(reopened, snapshot, out).verified
        assert out.read_bytes() == expected
    report = verify.verify(reopened, read_data=True)
    assert report.ok and report.checked == len(list(reopened.store.list(Kind.CHUNKS)))

    # The CLI takes the same location.
    passfile = tmp_path / "pass"
    passfile.write_text(PASSPHRASE)
    capsys.readouterr()
    assert run_cli("snapshots", "--repo", url, "--passphrase-file", str(passfile)) == 0
    listed = capsys.readouterr().out
    assert first.id[:12] in listed and second.id[:12] in listed
    assert run_cli("verify", "--repo", url, "--passphrase-file", str(passfile)) == 0
    assert run_cli("verify", "--read-data", "--repo", url, "--passphrase-file", str(passfile)) == 0
    assert run_cli("verify", "--keyless", "--repo", url) == 0
    # No lease is left behind.
    assert not list(reopened.store.list(Kind.LEASES))


@s3
@pytest.mark.slow
def test_requests_per_gib_and_throughput(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's target: at most 64 requests per GiB of new data, everything a backup
    does counted (open, lease, packs, indexes, manifest)."""
    store, requests = counted_store(s3_server, s3_bucket)
    Repository.init(store, encryption="none")
    source = tmp_path / "big.img"
    write_random_image(source, 1 * GiB, zero_every=0)  # random data: nothing compresses
    requests.reset()
    started = time.monotonic()
    repo = Repository.open(store)
    snapshot = backup_path(repo, source)
    backup_seconds = time.monotonic() - started
    new = snapshot.manifest["stats"]["new_bytes"]
    per_gib = requests.total / (new / GiB)
    with capsys.disabled():
        print(
            f"\n[s3] backup of {new / GiB:.2f} GiB new: {requests.total} requests "
            f"({per_gib:.1f}/GiB: {dict(requests.by_operation)}), "
            f"{new / MiB / backup_seconds:.0f} MiB/s; server started in "
            f"{s3_server.started_in:.1f} s"
        )
    assert new >= 0.99 * GiB
    assert per_gib <= 64, requests.by_operation
    # Packs and their indexes, index, manifest, lease and its parent; and a heartbeat of the
    # lease every 30 s (a loaded machine takes longer than that for 1 GiB).
    heartbeats = int(backup_seconds // leases.HEARTBEAT_EVERY)
    assert requests.by_operation["PutObject"] <= 2 * (new // PACK_BYTES + 1) + 4 + heartbeats

    started = time.monotonic()
    out = tmp_path / "out.img"
    restore_snapshot(Repository.open(S3Store(s3_bucket)), snapshot, out)
    restore_seconds = time.monotonic() - started
    with capsys.disabled():
        print(f"[s3] restore: {snapshot.size / MiB / restore_seconds:.0f} MiB/s")
    assert same_file(out, source)


@s3
def test_damaged_pack_is_named(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = S3Store(s3_bucket, client=s3_server.client())
    repo = Repository.init(store, passphrase=PASSPHRASE)
    source = tmp_path / "source.img"
    write_random_image(source, 8 * MiB)
    snapshot = backup_path(repo, source)
    (pack,) = store.pack_names()
    raw = repo.load_index(snapshot, "data").raw
    ids = [bytes(raw[i : i + 32]) for i in range(0, len(raw), 32)]
    victim = next(c for c in ids if store.exists(chunk(c)))
    _, offset, length = store._locate(victim)
    client = store.client
    data = bytearray(client.get_object(Bucket=s3_bucket, Key=f"packs/{pack}")["Body"].read())
    data[offset + length // 2] ^= 0x01
    client.put_object(Bucket=s3_bucket, Key=f"packs/{pack}", Body=bytes(data))

    passfile = tmp_path / "pass"
    passfile.write_text(PASSPHRASE)
    url = f"s3://{s3_bucket}"
    capsys.readouterr()
    assert run_cli("verify", "--repo", url, "--passphrase-file", str(passfile)) == 0
    code = run_cli("verify", "--read-data", "--repo", url, "--passphrase-file", str(passfile))
    found = capsys.readouterr()
    assert code == 3
    assert victim.hex() in found.out + found.err
    assert run_cli("verify", "--keyless", "--repo", url) == 3
    found = capsys.readouterr()
    # The pack is named, with its BLAKE3 mismatch, and the chunk with its offset, once.
    text = found.out + found.err
    assert f"packs/{pack}: its BLAKE3 does not match" in text
    assert f"packs/{pack}: chunk {victim.hex()} at offset {offset}" in text
    report = verify.verify_keyless(store)
    assert [d.what for d in report.damage] == [
        f"{store.url}/packs/{pack}",
        f"{store.url}/packs/{pack}: chunk {victim.hex()} at offset {offset}",
    ]
    assert report.checked == len(list(store.list(Kind.CHUNKS))) + 2  # and manifest, index


@s3
def test_init_creates_the_bucket_and_refuses_a_used_prefix(
    s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"s3://{s3_bucket}/a"
    assert run_cli("init", url, "--encryption", "none") == 0
    assert url in capsys.readouterr().out
    assert run_cli("init", url, "--encryption", "none") == 2
    assert "already holds a repository" in capsys.readouterr().err
    # The same bucket, another prefix: a second repository.
    assert run_cli("init", f"s3://{s3_bucket}/b", "--encryption", "none") == 0


@s3
def test_wrong_credentials_are_a_clear_error(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"s3://{s3_bucket}"
    assert run_cli("init", url, "--encryption", "none") == 0
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    capsys.readouterr()
    assert run_cli("snapshots", "--repo", url) == 1
    err = capsys.readouterr().err
    assert "refused access" in err and "AWS_SECRET_ACCESS_KEY" in err
    assert "Traceback" not in err


@s3
def test_unreachable_endpoint_is_a_clear_error(
    s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli(
        "snapshots", "--repo", f"s3://{s3_bucket}", "--s3-endpoint", "http://127.0.0.1:9"
    )
    err = capsys.readouterr().err
    assert code == 1 and "Cannot reach the object store" in err and "Traceback" not in err


@pytest.mark.parametrize("location", ["foo://x/y", "S3x://b", "http://host/repo"])
def test_unknown_scheme_is_refused(
    location: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Never taken as a relative path (it used to make a directory named after the scheme)."""
    monkeypatch.chdir(tmp_path)
    assert run_cli("init", location, "--encryption", "none") == 2
    assert "does not know" in capsys.readouterr().err
    assert run_cli("snapshots", "--repo", location) == 2
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("location", ["s3://", "s3://B", "s3://b/../x", "s3://ok-bucket/a//b"])
def test_bad_s3_location_is_refused(location: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("snapshots", "--repo", location) == 2
    assert location in capsys.readouterr().err


def test_boto3_is_imported_only_for_object_stores() -> None:
    """It takes longer to import than the rest of the CLI: local repositories never pay."""
    code = (
        "import sys, imaging.cli.main, imaging.repository.store as s, tempfile, pathlib\n"
        "d = pathlib.Path(tempfile.mkdtemp()) / 'r'\n"
        "s.Repository.init(d, encryption='none'); s.Repository.open(d)\n"
        "print('boto3' in sys.modules or 'botocore' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HOURGLASS_STATE_DIR": "none"},
    )
    assert out.stdout.strip() == "False"


@s3
@pytest.mark.root
@pytest.mark.integration
def test_ext4_partition_through_the_cli(s3_bucket: str, tmp_path: Path) -> None:
    """A partition of real files (partclone reads only the used blocks), backed up, changed,
    backed up and restored onto a loop device from the bucket, with every file identical."""
    url = f"s3://{s3_bucket}/pc"
    passfile = tmp_path / "pass"
    passfile.write_text(PASSPHRASE)
    key = ("--passphrase-file", str(passfile))
    assert run_cli("init", url, *key) == 0
    source_img = tmp_path / "source.img"
    make_ext4(source_img, 96 * MiB)
    with loop_device(source_img) as dev:
        with mounted(dev, tmp_path / "mnt") as mnt:
            fill_with_files(mnt, 30 * MiB)
            first_files = tree_digest(mnt)
        assert run_cli("backup", "--repo", url, *key, dev) == 0
        with mounted(dev, tmp_path / "mnt") as mnt:
            (mnt / "new-file").write_bytes(os.urandom(2 * MiB))
            second_files = tree_digest(mnt)
        assert run_cli("backup", "--repo", url, *key, dev, "--check", "data") == 0
    first, second = Repository.open(url, PASSPHRASE).snapshots()
    assert second.stored < first.stored / 4
    for snapshot, expected in ((first, first_files), (second, second_files)):
        target_img = tmp_path / f"target-{snapshot.id}.img"
        with open(target_img, "wb") as f:
            f.truncate(96 * MiB)
        with loop_device(target_img) as target:
            assert run_cli("restore", "--repo", url, *key, snapshot.id, target, "--yes") == 0
            sh("e2fsck", "-fn", target)
            with mounted(target, tmp_path / "check", "ro") as mnt:
                assert tree_digest(mnt) == expected


@s3
def test_store_objects(s3_server: S3Server, s3_bucket: str) -> None:
    """The Store interface on radosgw: conditional puts, ranges, listings, leases."""
    store = S3Store(s3_bucket, "p", client=s3_server.client())
    store.create(())
    name = Name(Kind.INDEXES, "snap1/data")
    assert store.put(name, b"hello ", b"world", if_absent=True)
    assert not store.put(name, b"other", if_absent=True)
    assert store.get(name) == b"hello world"
    assert store.get_range(name, 6, 100) == b"world"
    assert store.get_range(name, 11, 5) == b""
    assert store.stat(name).size == 11
    assert [i.name for i in store.list(Kind.INDEXES, "snap1/")] == [name]
    assert [i.name.key for i in store.groups(Kind.INDEXES)] == ["snap1"]
    with pytest.raises(FileNotFoundError):
        store.get(Name(Kind.SNAPSHOTS, "0" * 32))
    with pytest.raises(FileNotFoundError):
        store.get(chunk(b"\x01" * 32))
    assert store.delete(name) and not store.delete(name)
    with store.lease("writer") as lease:
        (held,) = store.list(Kind.LEASES)
        lease.update(parent=None)
        assert json.loads(store.get(held.name))["parent"] is None
    assert not list(store.list(Kind.LEASES))
    # A chunk is visible once its pack and index are written, in a new open too.
    assert store.put_chunk(b"\x02" * 32, b"x" * 1000)
    assert not store.exists(chunk(b"\x02" * 32))
    store.flush_chunks()
    again = S3Store(s3_bucket, "p", client=s3_server.client())
    assert again.get(chunk(b"\x02" * 32)) == b"x" * 1000
    assert again.get_range(chunk(b"\x02" * 32), 990, 100) == b"x" * 10
    assert not again.put_chunk(b"\x02" * 32, b"x" * 1000)


@s3
def test_killed_backup_leaves_only_packs_the_next_one_reuses(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{s3_bucket}"
    assert run_cli("init", url, "--encryption", "none") == 0
    source = tmp_path / "source.img"
    write_random_image(source, 4 * PACK_BYTES, zero_every=0)
    client = s3_server.client()
    child = backup_past_its_first_pack(client, s3_bucket, source, s3_server.env())
    child.kill()
    child.wait()
    left = pack_indexes(client, s3_bucket)
    assert left
    repo = Repository.open(url)
    assert not repo.snapshots()  # nothing is listed that cannot be restored
    reused = sum(1 for _ in repo.store.list(Kind.CHUNKS))
    assert reused > 0
    snapshot = backup_path(repo, source)
    stats = snapshot.manifest["stats"]
    assert stats["dedup_bytes"] >= reused * MiB  # the killed run's chunks were not sent again
    out = tmp_path / "out.img"
    restore_snapshot(Repository.open(url), snapshot, out)
    assert same_file(out, source)


# --- TLS and credentials -------------------------------------------------------------------


def _bucket_names(server: S3Server) -> list[str]:
    return [b["Name"] for b in server.client().list_buckets().get("Buckets", [])]


def _clean_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


def _credentials_file(path: Path, access: str, secret: str) -> Path:
    path.write_text(f"[default]\naws_access_key_id = {access}\naws_secret_access_key = {secret}\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A private radosgw that speaks https only, its certificate signed by a CA of its own."""
    with running(tmp_path_factory.mktemp("s3tls") / "state", tls=True) as server:
        yield server


@s3
def test_tls_endpoint_needs_its_ca(
    tls_server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """https to a store with its own CA: refused without --ca-file (nothing created), then
    init, backup and restore with it; the keys come from --credentials alone."""
    _clean_aws_env(monkeypatch)
    assert tls_server.endpoint.startswith("https://127.0.0.1:")
    assert tls_server.ca_file is not None
    creds = _credentials_file(tmp_path / "creds", tls_server.access_key, tls_server.secret_key)
    url = "s3://hg-tls-test"
    reach = ("--s3-endpoint", tls_server.endpoint, "--credentials", str(creds))
    capsys.readouterr()
    assert run_cli("init", url, *reach, "--encryption", "none") == 1
    err = capsys.readouterr().err
    assert "TLS" in err and "--ca-file" in err and "Traceback" not in err
    assert "hg-tls-test" not in _bucket_names(tls_server)

    with_ca = (*reach, "--ca-file", str(tls_server.ca_file))
    assert run_cli("init", url, *with_ca, "--encryption", "none") == 0
    assert "hg-tls-test" in _bucket_names(tls_server)
    source = tmp_path / "source.img"
    write_random_image(source, 3 * MiB)
    assert run_cli("backup", "--repo", url, *reach, str(source)) == 1
    err = capsys.readouterr().err
    assert "--ca-file" in err and "Traceback" not in err
    assert run_cli("backup", "--repo", url, *with_ca, "--progress", "none", str(source)) == 0
    store = S3Store("hg-tls-test", client=tls_server.client())
    (snapshot,) = Repository.open(store).snapshots()
    out = tmp_path / "out.img"
    assert run_cli("restore", "--repo", url, *with_ca, snapshot.id, str(out), "--yes") == 0
    assert out.read_bytes() == source.read_bytes()
    # A CA file that does not exist is the person's mistake, said as such.
    assert run_cli("snapshots", "--repo", url, *reach, "--ca-file", str(tmp_path / "no")) == 2
    assert "does not exist" in capsys.readouterr().err


@s3
def test_copy_to_another_object_store(
    s3_server: S3Server,
    s3_bucket: str,
    tls_server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A mirror on another object store, with its own endpoint, keys and CA: the --to-*
    options reach it while the source keeps its own; the mirror restores the same bytes."""
    _clean_aws_env(monkeypatch)
    assert tls_server.ca_file is not None
    src_creds = _credentials_file(tmp_path / "src", s3_server.access_key, s3_server.secret_key)
    dst_creds = _credentials_file(tmp_path / "dst", tls_server.access_key, tls_server.secret_key)
    src = ("--s3-endpoint", s3_server.endpoint, "--credentials", str(src_creds))
    url = f"s3://{s3_bucket}"
    assert run_cli("init", url, *src, "--encryption", "none") == 0
    source = tmp_path / "source.img"
    write_random_image(source, 3 * MiB)
    assert run_cli("backup", "--repo", url, *src, "--progress", "none", str(source)) == 0
    mirror = "s3://hg-mirror-elsewhere"
    to = ("--to", mirror, "--to-s3-endpoint", tls_server.endpoint)
    to += ("--to-credentials", str(dst_creds))
    capsys.readouterr()
    # The target's TLS is checked against the target's CA, not the source's (it has none).
    assert run_cli("copy", "--repo", url, *src, *to, "--progress", "none") == 1
    err = capsys.readouterr().err
    assert "TLS" in err and "Traceback" not in err
    assert "hg-mirror-elsewhere" not in _bucket_names(tls_server)
    with_ca = (*to, "--to-ca-file", str(tls_server.ca_file))
    assert run_cli("copy", "--repo", url, *src, *with_ca, "--progress", "none") == 0
    assert "Copied 1 snapshot" in capsys.readouterr().out
    there = ("--s3-endpoint", tls_server.endpoint, "--credentials", str(dst_creds))
    there += ("--ca-file", str(tls_server.ca_file))
    out = tmp_path / "out.img"
    assert run_cli("restore", "--repo", mirror, *there, "latest", str(out), "--yes") == 0
    assert out.read_bytes() == source.read_bytes()


@s3
def test_credentials_file(
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--credentials FILE is the only source of keys; wrong keys and a missing file are
    clear errors that never show the secret."""
    _clean_aws_env(monkeypatch)
    url = f"s3://{s3_bucket}"
    endpoint = ("--s3-endpoint", s3_server.endpoint)
    good = _credentials_file(tmp_path / "good", s3_server.access_key, s3_server.secret_key)
    capsys.readouterr()
    assert run_cli("init", url, *endpoint, "--encryption", "none") == 1
    assert "No credentials" in capsys.readouterr().err
    assert run_cli("init", url, *endpoint, "--credentials", str(good), "--encryption", "none") == 0
    assert run_cli("snapshots", "--repo", url, *endpoint, "--credentials", str(good)) == 0

    secret = "wrong-secret-b5f0e7c1d2"
    for access, name in ((s3_server.access_key, "bad-secret"), ("no-such-key", "bad-key")):
        bad = _credentials_file(tmp_path / name, access, secret)
        capsys.readouterr()
        code = run_cli("snapshots", "--repo", url, *endpoint, "--credentials", str(bad))
        found = capsys.readouterr()
        assert code == 1
        assert url in found.err and "refused access" in found.err
        assert "--credentials" in found.err and "Check the access key and secret" in found.err
        assert secret not in found.err + found.out and "Traceback" not in found.err

    missing = tmp_path / "missing"
    assert run_cli("snapshots", "--repo", url, *endpoint, "--credentials", str(missing)) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err and "Traceback" not in err


# --- gc ----------------------------------------------------------------------------------


def bucket_bytes(client: Any, bucket: str, prefix: str = "") -> int:
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        total += sum(int(o["Size"]) for o in page.get("Contents", []))
    return total


def overwrite_blocks(path: Path, blocks: range) -> None:
    with open(path, "r+b") as f:
        for n in blocks:
            f.seek(n * MiB)
            f.write(os.urandom(MiB))


@s3
def test_gc_deletes_and_repacks_packs_a_reader_still_reads(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """forget + gc: a pack with no live chunk goes, a mostly dead one is repacked; a restore
    that held its reader lease through the gc still reads every chunk, and the space comes
    back at the gc after it ended."""
    client = s3_server.client()
    store = S3Store(s3_bucket, client=client)
    repo = Repository.init(store, encryption="none")
    other, source = tmp_path / "other.img", tmp_path / "source.img"
    write_random_image(other, 8 * MiB, seed=1, zero_every=0)
    write_random_image(source, 16 * MiB, seed=2, zero_every=0)
    gone = backup_path(repo, other)  # its own pack: all dead after the forget
    old = backup_path(repo, source)
    original = source.read_bytes()
    overwrite_blocks(source, range(11))  # 11 of the first pack's 16 chunks die
    kept = backup_path(repo, source)
    assert len(store.pack_names()) == 3
    repo.delete_snapshot(gone.id)
    repo.delete_snapshot(old.id)
    before = bucket_bytes(client, s3_bucket)

    reader = Repository.open(S3Store(s3_bucket, client=s3_server.client()))
    late = Repository.open(S3Store(s3_bucket, client=s3_server.client()))
    with reader.reader(), late.reader():
        raw = reader.load_index(kept, "data").raw
        reader.read_chunk(bytes(raw[:32]))  # its chunk map is loaded: the old packs
        first = s3gc.collect(Repository.open(S3Store(s3_bucket, client=client)))
        assert first.repacked_packs == 1 and first.deleted_packs == 0
        assert first.waiting_batches == 1 and first.rewritten_bytes >= 5 * MiB
        out = tmp_path / "during.img"
        restore_snapshot(reader, kept, out)
        assert same_file(out, source)
        # A restore whose lease predates the gc but which reads the pack indexes only now,
        # of the snapshot forgotten meanwhile: its dead chunks come from superseded packs.
        restore_snapshot(late, old, out)
        assert out.read_bytes() == original
    # A fresh open sees only the packs that stay: the one repacked and the new one.
    assert len(S3Store(s3_bucket, client=client).pack_names()) == 2

    capsys.readouterr()
    assert run_cli("gc", "--repo", f"s3://{s3_bucket}", "--json") == 0
    second = json.loads(capsys.readouterr().out)
    assert second["deleted_packs"] == 2 and second["waiting_batches"] == 0
    after = bucket_bytes(client, s3_bucket)
    # 8 MiB of the forgotten image and 11 MiB of the overwritten blocks are gone.
    assert before - after >= 18 * MiB, (before, after)
    assert not client.list_objects_v2(Bucket=s3_bucket, Prefix="trash/").get("KeyCount")
    assert not client.list_objects_v2(Bucket=s3_bucket, Prefix=f"indexes/{old.id}").get("KeyCount")
    fresh = Repository.open(S3Store(s3_bucket, client=client))
    out = tmp_path / "after.img"
    restore_snapshot(fresh, kept, out)
    assert same_file(out, source)
    assert verify.verify(fresh, read_data=True).ok
    assert verify.verify_keyless(S3Store(s3_bucket, client=client)).ok
    # Nothing more to do: a second gc changes nothing.
    again = s3gc.collect(fresh)
    assert again.deleted_packs == again.repacked_packs == 0


@s3
def test_stale_leases_do_not_block_gc(s3_server: S3Server, s3_bucket: str) -> None:
    """A killed process's lease (this host, pid gone) and another host's silent one
    (heartbeat older than leases.STALE_AFTER) are ignored and removed; a live one waits."""
    client = s3_server.client()
    store = S3Store(s3_bucket, client=client)
    repo = Repository.init(store, encryption="none")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    now = time.time()
    records = {
        "killed": {"host": os.uname().nodename, "pid": int(dead.stdout), "heartbeat": now},
        "silent": {"host": "elsewhere", "pid": 1, "heartbeat": now - leases.STALE_AFTER - 60},
        "alive": {"host": "elsewhere", "pid": 1, "heartbeat": now},
    }
    for name, record in records.items():
        full = {"kind": "reader", "boot_id": leases.boot_id(), "started": now - 3600, **record}
        store.put(Name(Kind.LEASES, name), json.dumps(full).encode())
    # Something to free: a pack of a chunk no snapshot references.
    assert store.put_chunk(b"\x07" * 32, b"y" * 4096)
    store.flush_chunks()
    first = s3gc.collect(repo)
    assert first.waited_for == {"alive"} and first.waiting_batches == 1
    assert sorted(i.name.key for i in store.list(Kind.LEASES)) == ["alive"]
    store.delete(Name(Kind.LEASES, "alive"))
    second = s3gc.collect(repo)
    assert second.deleted_packs == 1 and second.waiting_batches == 0
    # A stale gc lease (a killed gc) is taken over too.
    gc_record = {
        "kind": "gc",
        "host": "elsewhere",
        "pid": 1,
        "boot_id": "x",
        "started": now - 7200,
        "heartbeat": now - leases.STALE_AFTER - 1,
    }
    store.put(Name(Kind.LEASES, "gc"), json.dumps(gc_record).encode())
    s3gc.collect(repo)
    assert not list(store.list(Kind.LEASES))


@s3
@pytest.mark.faults
def test_radosgw_killed_mid_backup(tmp_path: Path) -> None:
    """The store dies under a backup: the backup fails clearly; once the store is back, the
    next backup completes on top of the packs left behind, nothing unrestorable is listed,
    and gc leaves only packs with live chunks (and no lease of the failed run)."""
    source = tmp_path / "source.img"
    write_random_image(source, 2 * PACK_BYTES + 8 * MiB, zero_every=0)
    with running(tmp_path / "state") as server:
        client = server.client()
        bucket = "hg-killed"
        url = f"s3://{bucket}"
        Repository.init(S3Store(bucket, client=client), encryption="none")

        child = backup_past_its_first_pack(
            client, bucket, source, server.env(), stderr=subprocess.PIPE
        )
        try:
            server.kill_gateway()
            _, err = child.communicate(timeout=240)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        message = err.decode()
        assert child.returncode not in (0, None), message
        assert "Cannot reach the object store" in message and url in message
        assert "Traceback" not in message

        server.start_gateway()
        repo = Repository.open(S3Store(bucket, client=client))
        assert not repo.snapshots()  # nothing is listed that cannot be restored
        left = set(pack_indexes(client, bucket))
        assert left
        snapshot = backup_path(repo, source)
        assert snapshot.manifest["stats"]["dedup_bytes"] >= MiB  # the leftovers were reused
        assert [s.id for s in Repository.open(S3Store(bucket, client=client)).snapshots()] == [
            snapshot.id
        ]

        result = s3gc.collect(Repository.open(S3Store(bucket, client=client)))
        assert result.waiting_batches == 0
        live = set(repo.load_index(snapshot, "data"))
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
        packs = [k for k in keys if k.startswith("packs/") and not k.endswith(".idx")]
        store = S3Store(bucket, client=client)
        for pack in packs:
            assert f"{pack}.idx" in keys, f"{pack} has no index after gc"
            entries = store.pack_indexes()[pack.removeprefix("packs/")][1]
            assert entries and any(i in live for i, _, _, _ in entries), f"{pack} is dead"
        assert not [k for k in keys if k.startswith(("leases/", "trash/"))]
        out = tmp_path / "out.img"
        restore_snapshot(Repository.open(store), snapshot, out)
        assert same_file(out, source)


@s3
@pytest.mark.faults
def test_gc_puts_back_a_pack_a_running_backup_took_as_stored(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """A backup that read the pack indexes before gc superseded a dead pack takes its chunks
    as stored; its lease holds the batch, and the next gc puts the pack's index back rather
    than deleting what the new snapshot needs. (The backup's clock runs 10 minutes ahead, so
    gc's margin for running backups' packs does not spare the pack: the lease rules must.)"""
    client = s3_server.client()
    repo = Repository.init(S3Store(s3_bucket, client=client), encryption="none")
    source = tmp_path / "source.img"
    write_random_image(source, 6 * MiB, seed=3, zero_every=0)
    forgotten = backup_path(repo, source)
    repo.delete_snapshot(forgotten.id)
    (pack,) = S3Store(s3_bucket, client=client).pack_names()

    writer = Repository.open(S3Store(s3_bucket, client=s3_server.client()))
    with writer.writer() as lease:
        lease.update(started=time.time() + 600)
        writer.store.pack_names()  # the pack indexes are read: the dead pack is there
        first = s3gc.collect(Repository.open(S3Store(s3_bucket, client=client)))
        assert first.waiting_batches == 1 and first.deleted_packs == 0
        assert pack not in S3Store(s3_bucket, client=client).pack_names()
        again = backup_path(writer, source)
        assert again.manifest["stats"]["new_chunks"] == 0  # all taken as stored
    second = s3gc.collect(Repository.open(S3Store(s3_bucket, client=client)))
    assert second.restored > 0 and second.deleted_packs == 0 and second.waiting_batches == 0
    fresh = Repository.open(S3Store(s3_bucket, client=client))
    assert fresh.store.pack_names() == (pack,)
    out = tmp_path / "out.img"
    restore_snapshot(fresh, again, out)
    assert out.read_bytes() == source.read_bytes()
    assert verify.verify(fresh, read_data=True).ok


@s3
def test_restore_reads_neighbours_in_one_get(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """Chunks that lie end to end in a pack come in one ranged GET (four 1 MiB chunks at a
    time), straight into the target: nothing else is written on local disk."""
    repo = Repository.init(S3Store(s3_bucket, client=s3_server.client()), passphrase=PASSPHRASE)
    source = tmp_path / "source.img"
    write_random_image(source, 32 * MiB, seed=4, zero_every=0)
    snapshot = backup_path(repo, source)
    store, requests = counted_store(s3_server, s3_bucket)
    reader = Repository.open(store, PASSPHRASE)
    reader.load_index(snapshot, "data")
    store.pack_names()  # the pack indexes: one GET each, before counting
    requests.reset()
    out = tmp_path / "out.img"
    before = sorted(p.name for p in tmp_path.iterdir())
    restore_snapshot(reader, snapshot, out)
    assert out.read_bytes() == source.read_bytes()
    assert requests.pack_reads == 32 // 4, requests.by_operation
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "out.img"])


@s3
def test_an_init_stopped_halfway_leaves_no_bucket(
    s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while init writes the key slot (after it made the bucket): the bucket goes
    again, so the next init of the same name works instead of saying "not empty"."""
    from imaging.repository import keys

    real = keys.write_slot

    def interrupted(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)  # the slot is written, then the person presses Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(keys, "write_slot", interrupted)
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", "a passphrase for the test")
    with pytest.raises(KeyboardInterrupt):
        Repository.init(f"s3://{s3_bucket}", passphrase="a passphrase for the test")
    assert s3_bucket not in _bucket_names(s3_server)
    monkeypatch.setattr(keys, "write_slot", real)
    # A bucket that was there before init keeps existing; only what init wrote goes.
    s3_server.client().create_bucket(Bucket=s3_bucket)
    monkeypatch.setattr(keys, "write_slot", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Repository.init(f"s3://{s3_bucket}/p", passphrase="a passphrase for the test")
    assert s3_bucket in _bucket_names(s3_server)
    listing = s3_server.client().list_objects_v2(Bucket=s3_bucket)
    assert listing.get("KeyCount", 0) == 0, listing
    monkeypatch.setattr(keys, "write_slot", real)
    assert run_cli("init", f"s3://{s3_bucket}/p") == 0
