"""`hourglass copy`: mirrors of a repository, local and on the suite's own radosgw; kills,
a radosgw that dies, --window and --bwlimit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from imaging.image.backup import backup_path
from imaging.image.restore import restore_snapshot
from imaging.repository import storage, verify
from imaging.repository.s3store import PACK_BYTES, S3Options
from imaging.repository.storage import Kind
from imaging.repository.store import Repository, as_store
from tests import s3server
from tests.conftest import PASSPHRASE
from tests.s3server import S3Server
from tests.support import MiB, hourglass_subprocess, run_cli, same_file, write_random_image

s3 = pytest.mark.s3


@pytest.fixture
def env_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each command takes the passphrase from the environment (and removes it from there)."""
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)


def cli(*argv: str) -> int:
    """`hourglass ARGV` in this process, the passphrase in the environment for it."""
    os.environ["HOURGLASS_PASSPHRASE"] = PASSPHRASE
    try:
        return run_cli(*argv)
    finally:
        os.environ.pop("HOURGLASS_PASSPHRASE", None)


def change_some(path: Path, seed: int) -> None:
    with open(path, "r+b") as f:
        for n in range(4):
            f.seek(n * 3 * MiB + seed * 4096)
            f.write(os.urandom(64 * 1024))


def two_snapshots(tmp_path: Path, location: str | Path, size: int = 12 * MiB) -> list[Path]:
    """A source repository with a full and an incremental snapshot; the images as they were."""
    repo = Repository.init(location, passphrase=PASSPHRASE)
    image = tmp_path / "disk.img"
    write_random_image(image, size)
    kept = []
    for n in range(2):
        if n:
            change_some(image, n)
        backup_path(repo, image)
        kept.append(tmp_path / f"disk.{n}.img")
        kept[-1].write_bytes(image.read_bytes())
    return kept


def copy_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    code = cli("copy", *argv, "--json", "--progress", "none")
    out, err = capsys.readouterr()
    print(err)  # shown when the test fails
    return code, json.loads(out) if out.strip().startswith("{") else {}


def assert_mirror(source: str | Path, target: str | Path, images: list[Path], tmp: Path) -> None:
    """The target restores every snapshot byte for byte and verifies clean, reading every
    chunk; its config and key slots are the source's, byte for byte."""
    src = Repository.open(source, PASSPHRASE)
    dst = Repository.open(target, PASSPHRASE)
    assert dst.id == src.id
    assert dst.store.get(storage.CONFIG) == src.store.get(storage.CONFIG)
    slots = sorted(i.name for i in src.store.list(Kind.KEYS))
    assert slots and slots == sorted(i.name for i in dst.store.list(Kind.KEYS))
    for name in slots:
        assert dst.store.get(name) == src.store.get(name)
    snapshots = dst.snapshots()
    assert [s.id for s in snapshots] == [s.id for s in src.snapshots()]
    for snapshot, image in zip(snapshots, images, strict=True):
        out = tmp / f"restored-{snapshot.id[:8]}.img"
        restore_snapshot(dst, snapshot, out)
        assert same_file(out, image)
        out.unlink()
    report = verify.verify(dst, read_data=True)
    assert report.ok and report.complete, [d.describe() for d in report.damage]


def test_local_copy_round_trip_and_a_second_copy_sends_nothing(
    tmp_path: Path, env_passphrase: None, capsys: pytest.CaptureFixture[str]
) -> None:
    images = two_snapshots(tmp_path, tmp_path / "src")
    code, result = copy_json(capsys, "--repo", str(tmp_path / "src"), "--to", str(tmp_path / "dst"))
    assert code == 0
    assert result["created"] is True and result["complete"] is True
    assert len(result["copied"]) == 2  # type: ignore[arg-type]
    assert_mirror(tmp_path / "src", tmp_path / "dst", images, tmp_path)
    stored = sum(1 for _ in Repository.open(tmp_path / "src", PASSPHRASE).store.list(Kind.CHUNKS))
    assert result["chunks_sent"] == stored  # each chunk once, the incremental's shared ones too
    code, again = copy_json(capsys, "--repo", str(tmp_path / "src"), "--to", str(tmp_path / "dst"))
    assert code == 0
    assert again["copied"] == [] and again["chunks_sent"] == 0 and again["bytes_sent"] == 0
    assert len(again["already"]) == 2  # type: ignore[arg-type]


def test_selection_copies_only_the_named(
    tmp_path: Path, env_passphrase: None, capsys: pytest.CaptureFixture[str]
) -> None:
    two_snapshots(tmp_path, tmp_path / "src")
    first, second = Repository.open(tmp_path / "src", PASSPHRASE).snapshots()
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    code, result = copy_json(capsys, "--repo", src, "--to", dst, first.id[:10])
    assert code == 0 and result["copied"] == [first.id]
    assert Repository.open(dst, PASSPHRASE).snapshot_ids() == [first.id]
    code, result = copy_json(capsys, "--repo", src, "--to", dst, "latest")
    assert code == 0 and result["copied"] == [second.id]
    # Only the incremental's new chunks went: fewer than the first copy's.
    assert (
        0
        < result["chunks_sent"]
        < len(set(Repository.open(src, PASSPHRASE).load_index(second, second.images[0].name)))
    )
    assert sorted(Repository.open(dst, PASSPHRASE).snapshot_ids()) == sorted([first.id, second.id])


def test_another_repository_is_refused(
    tmp_path: Path, env_passphrase: None, capsys: pytest.CaptureFixture[str]
) -> None:
    two_snapshots(tmp_path, tmp_path / "src")
    other = Repository.init(tmp_path / "other", passphrase=PASSPHRASE)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "other").rglob("*"))
    code = cli("copy", "--repo", str(tmp_path / "src"), "--to", str(tmp_path / "other"))
    err = capsys.readouterr().err
    assert code == 2
    src_id = Repository.open(tmp_path / "src", PASSPHRASE).id
    assert src_id in err and other.id in err
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "other").rglob("*")) == before
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("mine")
    assert cli("copy", "--repo", str(tmp_path / "src"), "--to", str(tmp_path / "junk")) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "junk").iterdir()] == ["file"]


def test_bad_bwlimit_and_window_are_refused_naming_the_entry(
    tmp_path: Path, env_passphrase: None, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("copy", "--repo", str(tmp_path / "src"), "--to", str(tmp_path / "dst"))
    assert run_cli(*args, "--bwlimit", "08:00,512k 18:00,10Q") == 2
    assert "'18:00,10Q'" in capsys.readouterr().err
    assert run_cli(*args, "--window", "22:00-26:00") == 2
    assert "'26:00'" in capsys.readouterr().err
    assert run_cli("backup", "--repo", str(tmp_path), "--bwlimit", "Xyz-08:00,1M", "x") == 2
    assert "'Xyz-08:00,1M'" in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()


def clock_text(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S")


def test_window_waits_for_its_start_and_stops_at_its_end(
    tmp_path: Path, env_passphrase: None, capsys: pytest.CaptureFixture[str]
) -> None:
    images = two_snapshots(tmp_path, tmp_path / "src", size=24 * MiB)
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    # Closes 2 s from now; at 4 MiB/s the copy needs about 6 s: it stops at the end.
    now = datetime.now()
    window = f"{clock_text(now - timedelta(hours=1))}-{clock_text(now + timedelta(seconds=2))}"
    code, result = copy_json(
        capsys, "--repo", src, "--to", dst, "--window", window, "--bwlimit", "4M"
    )
    assert code == 14
    assert result["complete"] is False and result["remaining"]
    err = capsys.readouterr().err
    listed = Repository.open(dst, PASSPHRASE).snapshots()
    assert [s.id for s in listed] == result["copied"]  # nothing half-copied is listed
    for snapshot in listed:
        restore_snapshot(Repository.open(dst, PASSPHRASE), snapshot, tmp_path / "part.img")
    sent_first = int(result["chunk_bytes"])  # type: ignore[call-overload]
    assert sent_first > 0
    # Opens 3 s from now: the copy says until when it waits, then finishes what was left.
    now = datetime.now()
    window = f"{clock_text(now + timedelta(seconds=3))}-{clock_text(now + timedelta(hours=2))}"
    started = time.monotonic()
    capsys.readouterr()
    code = cli("copy", "--repo", src, "--to", dst, "--window", window, "--json")
    out, err = capsys.readouterr()
    assert code == 0
    assert time.monotonic() - started >= 2.0
    assert f"waiting until {(now + timedelta(seconds=3)).strftime('%Y-%m-%d %H:%M:%S')}" in err
    result = json.loads(out)
    assert result["complete"] is True and result["waited"] > 0
    assert_mirror(src, dst, images, tmp_path)
    total = sum(i.size for i in Repository.open(src, PASSPHRASE).store.list(Kind.CHUNKS))
    # The first run's chunks were kept (less at most one batch lost in tmp/: none here,
    # the window's end flushes them).
    assert sent_first + int(result["chunk_bytes"]) == total


@s3
def test_copies_to_and_from_object_stores(
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
    env_passphrase: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images = two_snapshots(tmp_path, tmp_path / "src")
    src = str(tmp_path / "src")
    remote, other = f"s3://{s3_bucket}/mirror", f"s3://{s3_bucket}/second"
    code, result = copy_json(capsys, "--repo", src, "--to", remote)
    assert code == 0 and result["created"] is True and len(result["copied"]) == 2  # type: ignore[arg-type]
    assert_mirror(src, remote, images, tmp_path)
    code, again = copy_json(capsys, "--repo", src, "--to", remote)
    assert code == 0 and again["bytes_sent"] == 0
    # s3 -> local and s3 -> s3
    code, back = copy_json(capsys, "--repo", remote, "--to", str(tmp_path / "back"))
    assert code == 0 and len(back["copied"]) == 2  # type: ignore[arg-type]
    assert_mirror(remote, tmp_path / "back", images, tmp_path)
    first = Repository.open(src, PASSPHRASE).snapshots()[0]
    code, sideways = copy_json(capsys, "--repo", remote, "--to", other, first.id)
    assert code == 0 and sideways["copied"] == [first.id]
    assert Repository.open(other, PASSPHRASE).snapshot_ids() == [first.id]
    report = verify.verify(Repository.open(other, PASSPHRASE), read_data=True)
    assert report.ok


def plain_source(tmp_path: Path, size: int) -> tuple[Path, Path]:
    """An unencrypted source (child processes derive keys at full strength otherwise)."""
    repo = Repository.init(tmp_path / "src", encryption="none")
    image = tmp_path / "big.img"
    write_random_image(image, size, zero_every=0)
    backup_path(repo, image)
    return tmp_path / "src", image


def last_progress(path: Path) -> int:
    done = 0
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith('{"type": "progress"'):
            done = int(json.loads(line)["done"])
    return done


def pack_bytes(server: S3Server, bucket: str, prefix: str) -> int:
    """The bytes of the complete packs (those with an index) on the target."""
    listing = server.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/packs/")
    objects = {o["Key"]: int(o["Size"]) for o in listing.get("Contents", [])}
    return sum(size for key, size in objects.items() if f"{key}.idx" in objects)


@s3
def test_killed_copy_resends_at_most_one_pack(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, image = plain_source(tmp_path, 3 * PACK_BYTES)
    total = sum(i.size for i in Repository.open(src).store.list(Kind.CHUNKS))
    remote = f"s3://{s3_bucket}/m"
    progress = tmp_path / "progress.jsonl"
    with open(progress, "wb") as log:
        child = hourglass_subprocess(
            "copy",
            "--repo",
            str(src),
            "--to",
            remote,
            "--progress",
            "json",
            env={**s3_server.env(), "HOURGLASS_STATE_DIR": "none"},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + 180
            # Past the first pack and well into the second.
            while last_progress(progress) < 1.5 * PACK_BYTES and child.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert child.poll() is None, "the copy ended before it could be killed"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    reported = last_progress(progress)
    durable = pack_bytes(s3_server, s3_bucket, "m")
    assert durable >= PACK_BYTES
    # What the killed copy reported sent is on the target, less at most one pack.
    assert reported - durable <= PACK_BYTES + 4 * MiB
    assert Repository.open(remote).snapshot_ids() == []  # nothing listed that cannot be restored
    code, result = copy_json(capsys, "--repo", str(src), "--to", remote)
    assert code == 0 and result["complete"] is True
    print(
        f"killed copy: {reported / MiB:.1f} MiB reported sent, {durable / MiB:.1f} MiB durable "
        f"on the target; the resumed copy sent {int(result['chunk_bytes']) / MiB:.1f} MiB of "
        f"{total / MiB:.1f} MiB"
    )
    assert int(result["chunk_bytes"]) + durable == total  # nothing durable was sent again
    assert int(result["chunk_bytes"]) <= total - reported + PACK_BYTES + 4 * MiB
    dst = Repository.open(remote)
    (snapshot,) = dst.snapshots()
    restore_snapshot(dst, snapshot, tmp_path / "out.img")
    assert same_file(tmp_path / "out.img", image)
    assert verify.verify(dst, read_data=True).ok


@s3
def test_radosgw_killed_mid_copy_then_the_copy_resumes(tmp_path: Path) -> None:
    src, image = plain_source(tmp_path, 2 * PACK_BYTES)
    with s3server.running(tmp_path / "state") as server:
        env = {
            **os.environ,
            **server.env(),
            "HOURGLASS_STATE_DIR": "none",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        }
        remote = "s3://hg-copy-kill/m"
        child = hourglass_subprocess(
            # Slowed down, so that radosgw dies with most of the copy to go.
            "copy",
            "--repo",
            str(src),
            "--to",
            remote,
            "--progress",
            "none",
            "--bwlimit",
            "30M",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        pid_file = tmp_path / "state" / "run" / "client.rgw.a.pid"
        rgw = int(pid_file.read_text())
        client = server.client(access_key=server.access_key, secret_key=server.secret_key)
        deadline = time.monotonic() + 120
        while child.poll() is None and time.monotonic() < deadline:
            try:
                listing = client.list_objects_v2(Bucket="hg-copy-kill", Prefix="m/packs/")
            except Exception:
                listing = {}
            if any(o["Key"].endswith(".idx") for o in listing.get("Contents", [])):
                break
            time.sleep(0.05)
        assert child.poll() is None, "the copy ended before radosgw could be killed"
        os.kill(rgw, signal.SIGKILL)
        _, err = child.communicate(timeout=300)
        assert child.returncode not in (0, None)
        assert b"Cannot reach the object store" in err or b"could not be written" in err, err
        print(err.decode(errors="replace"))  # the message, for -s
        assert b"Traceback" not in err
        # Start radosgw again on the same cluster (the data lives in the OSD).
        subprocess.run(
            ["radosgw", "-n", "client.rgw.a", "-c", str(tmp_path / "state" / "ceph.conf")],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                client.list_objects_v2(Bucket="hg-copy-kill", Prefix="m/", MaxKeys=1)
                break
            except Exception:
                assert time.monotonic() < deadline, "radosgw did not come back"
                time.sleep(0.5)
        done = subprocess.run(
            [
                *hourglass_cmd(),
                "copy",
                "--repo",
                str(src),
                "--to",
                remote,
                "--json",
                "--progress",
                "none",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["complete"] and len(result["copied"]) == 1
        total = sum(i.size for i in Repository.open(src).store.list(Kind.CHUNKS))
        assert result["chunk_bytes"] < total  # the packs written before the kill were kept
        options = S3Options(
            server.endpoint, access_key=server.access_key, secret_key=server.secret_key
        )
        dst = Repository.open(as_store(remote, s3=options))
        (snapshot,) = dst.snapshots()
        restore_snapshot(dst, snapshot, tmp_path / "out.img")
        assert same_file(tmp_path / "out.img", image)
        assert verify.verify(dst, read_data=True).ok


def hourglass_cmd() -> list[str]:
    import sys

    return [sys.executable, "-m", "imaging.cli.main"]


@s3
@pytest.mark.slow
def test_bwlimit_averages_twenty_mib_per_second_over_a_minute(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rate = 20 * MiB
    src, _ = plain_source(tmp_path, 61 * rate)
    remote = f"s3://{s3_bucket}/bw"
    started = time.monotonic()
    code, result = copy_json(capsys, "--repo", str(src), "--to", remote, "--bwlimit", "20M")
    wall = time.monotonic() - started
    assert code == 0 and result["complete"] is True
    sent = int(result["bytes_sent"])  # type: ignore[call-overload]
    assert sent >= 60 * rate
    assert wall >= 55
    measured = sent / float(result["elapsed"])  # type: ignore[arg-type]
    print(
        f"--bwlimit 20M: {sent / MiB:.0f} MiB in {result['elapsed']} s, "
        f"{measured / MiB:.2f} MiB/s (wall {wall:.1f} s)"
    )
    assert 0.9 * rate <= measured <= 1.1 * rate
    assert 0.9 * rate <= sent / wall <= 1.1 * rate


def test_source_filter_and_a_damaged_manifest_is_named_not_hidden(
    tmp_path: Path, env_passphrase: None, capsys: pytest.CaptureFixture[str]
) -> None:
    two_snapshots(tmp_path, tmp_path / "src")
    src_repo = Repository.open(tmp_path / "src", PASSPHRASE)
    other = tmp_path / "other.img"
    write_random_image(other, 4 * MiB, seed=7)
    third = backup_path(src_repo, other)
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    code, result = copy_json(capsys, "--repo", src, "--to", dst, "--source", third.source)
    assert code == 0 and result["copied"] == [third.id]
    # One manifest of the source flipped: the rest is copied, the damage named, exit 3.
    first = src_repo.snapshots()[0]
    manifest = tmp_path / "src" / "snapshots" / f"{first.id}.snap"
    data = bytearray(manifest.read_bytes())
    data[40] ^= 0xFF
    manifest.write_bytes(bytes(data))
    capsys.readouterr()
    code = cli("copy", "--repo", src, "--to", dst, "--progress", "none")
    err = capsys.readouterr().err
    assert code == 3
    assert (
        f"DAMAGED snapshot {first.id}" in err
        and "1 snapshot manifest of the source cannot be read and was not copied" in err
    )
    copied = Repository.open(dst, PASSPHRASE).snapshot_ids()
    assert first.id not in copied and len(copied) == 2


@s3
def test_backup_and_restore_with_bwlimit_on_an_object_store(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The limited store wraps an S3 store: its leases, packs and ranged reads still work."""
    url = f"s3://{s3_bucket}/bw"
    assert run_cli("init", url, "--encryption", "none") == 0
    image = tmp_path / "disk.img"
    write_random_image(image, 12 * MiB)
    assert run_cli("backup", "--repo", url, "--bwlimit", "08:00,50M 20:00,40M", str(image)) == 0
    out = tmp_path / "out.img"
    assert (
        run_cli("restore", "--repo", url, "--bwlimit", "off:30M", "--yes", "latest", str(out)) == 0
    )
    assert same_file(out, image)
    assert run_cli("verify", "--repo", url, "--read-data") == 0
