"""Unattended runs against an object store: ``hourglass.repo=s3://BUCKET/PREFIX`` with the
keys in an AWS credentials file on a labelled drive (``hourglass.credentials=LABEL=x:/f``)
and ``hourglass.s3_endpoint=``: a backup of a real disk, then a restore onto another disk,
byte for byte, and a verify; a missing CA file and a wrong secret fail with one clear line. Nothing comes from the environment:
the server's keys and endpoint are taken out of it first."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from imaging.repository.s3store import S3Options
from imaging.repository.store import Repository, as_store
from imaging.unattended.run import RESULT, run_unattended
from tests.conftest import PASSPHRASE
from tests.imaging.disks.helpers import GptPart, attached, make_fs, make_gpt_disk, node, put_files
from tests.imaging.unattended.test_run import one_result
from tests.s3server import S3Server
from tests.support import MiB, sh

pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.s3]

LAYOUT = [
    GptPart(1, "vfat", 32, "ef00", "ESP", "EFI system"),
    GptPart(2, "ext4", 64, "8304", "pcroot", "root"),
]


def digest(device: str) -> str:
    with open(device, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def credentials(access_key: str, secret: str) -> str:
    return f"[default]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret}\n"


def test_backup_and_restore_through_a_bucket(
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    mount_root: Path,
) -> None:
    for name in s3_server.env():
        monkeypatch.delenv(name)
    url = f"s3://{s3_bucket}/lab/pc7"
    options = S3Options(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    Repository.init(as_store(url, s3=options), passphrase=PASSPHRASE)
    pc_image, keys_image, new_image = tmp_path / "pc.img", tmp_path / "keys.img", tmp_path / "new"
    make_gpt_disk(pc_image, LAYOUT, 100)
    sh("truncate", "-s", "40M", keys_image)
    sh("truncate", "-s", "100M", new_image)
    said: list[str] = []
    with attached(pc_image) as pc, attached(keys_image) as keys, attached(new_image) as new:
        make_fs(node(pc, 1), "vfat", "ESP")
        make_fs(node(pc, 2), "ext4", "pcroot")
        put_files(node(pc, 2), "ext4", tmp_path, 6 * MiB, seed=5)
        make_fs(keys, "ext4", "HGS3KEYS")
        mnt = tmp_path / "keys-mnt"
        mnt.mkdir()
        sh("mount", keys, mnt)
        (mnt / "aws").write_text(credentials(s3_server.access_key, s3_server.secret_key))
        (mnt / "wrong").write_text(credentials(s3_server.access_key, "not-the-secret"))
        (mnt / "pass").write_text(PASSPHRASE + "\n")
        sh("umount", mnt)
        common = (
            f"quiet hourglass.repo={url} hourglass.s3_endpoint={s3_server.endpoint} "
            "hourglass.credentials=LABEL=HGS3KEYS:/aws "
            "hourglass.passphrase_file=LABEL=HGS3KEYS:/pass hourglass.after=poweroff "
        )

        outcome = run_unattended(
            common + f"hourglass.run=backup hourglass.source={pc}", say=said.append
        )
        assert outcome.ok, outcome.line
        line = one_result(said, capsys.readouterr().out)
        assert line.startswith(f"{RESULT} OK backup ") and line.endswith(tuple("0123456789s"))
        assert f"of {pc} " in line and "verified" in line, line

        outcome = run_unattended(
            common + f"hourglass.run=restore hourglass.target={new}", say=said.append
        )
        assert outcome.ok, outcome.line
        line = one_result(said, capsys.readouterr().out)
        assert line.startswith(f"{RESULT} OK restore ") and "verified" in line, line
        sh("partx", "--update", new)
        for number in (1, 2):
            assert digest(node(new, number)) == digest(node(pc, number)), f"partition {number}"

        outcome = run_unattended(common + "hourglass.run=verify hourglass.read_data=1")
        assert outcome.ok, outcome.line
        line = one_result(said, capsys.readouterr().out)
        assert line.startswith(f"{RESULT} OK verify (data) of 1 snapshot(s)"), line

        no_ca = common + "hourglass.ca_file=LABEL=HGS3KEYS:/no-such-ca.pem hourglass.run=verify"
        outcome = run_unattended(no_ca)
        line = one_result(said, capsys.readouterr().out)
        assert not outcome.ok and "no-such-ca.pem does not exist" in line, line

        wrong = common.replace("HGS3KEYS:/aws", "HGS3KEYS:/wrong")
        outcome = run_unattended(wrong + f"hourglass.run=backup hourglass.source={pc}")
        assert not outcome.ok
        line = one_result(said, capsys.readouterr().out)
        assert line.startswith(f"{RESULT} FAILED The object store refused access to {url}"), line
        assert "not-the-secret" not in line
    repo = Repository.open(as_store(url, s3=options), PASSPHRASE)
    assert [s.source for s in repo.snapshots()] == [pc]
    assert not list(mount_root.glob("*/*")), "mounts were left behind"
