"""The object-store repository on a second engine, SeaweedFS (`weed mini`): the tests of
tests/imaging/test_s3.py that hold for any S3 server, run against it. radosgw and SeaweedFS
differ where it matters to Hourglass: conditional puts, ETags in `If-Match`, listings and
ranged reads (../shared/s3-notes.md)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from tests.imaging import test_s3
from tests.s3server import S3Server

pytestmark = [pytest.mark.s3]


@pytest.fixture
def weed_bucket(seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A bucket name of this test's own on SeaweedFS, its endpoint and keys in the
    environment (as ``s3_bucket`` does for radosgw)."""
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    return f"hg-weed-{os.getpid()}-{next(_names)}"


_names = itertools.count()


def test_round_trip_incremental_verify(
    seaweedfs: S3Server, weed_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_s3.test_round_trip_incremental_verify(seaweedfs, weed_bucket, tmp_path, capsys)


def test_store_objects(seaweedfs: S3Server, weed_bucket: str) -> None:
    """Conditional puts, ranges, listings, leases."""
    test_s3.test_store_objects(seaweedfs, weed_bucket)


def test_killed_backup_leaves_only_packs_the_next_one_reuses(
    seaweedfs: S3Server, weed_bucket: str, tmp_path: Path
) -> None:
    test_s3.test_killed_backup_leaves_only_packs_the_next_one_reuses(
        seaweedfs, weed_bucket, tmp_path
    )


def test_gc_deletes_and_repacks_packs_a_reader_still_reads(
    seaweedfs: S3Server, weed_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_s3.test_gc_deletes_and_repacks_packs_a_reader_still_reads(
        seaweedfs, weed_bucket, tmp_path, capsys
    )


def test_init_creates_the_bucket_and_refuses_a_used_prefix(
    weed_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    test_s3.test_init_creates_the_bucket_and_refuses_a_used_prefix(weed_bucket, capsys)
