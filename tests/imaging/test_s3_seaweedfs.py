"""The object-store repository on a second engine, SeaweedFS (`weed mini`): the tests of
tests/imaging/test_s3.py that hold for any S3 server, run against it. radosgw and SeaweedFS
differ where it matters to Hourglass: conditional puts, ETags in `If-Match`, listings and
ranged reads (../shared/s3-notes.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.imaging import test_s3
from tests.s3server import S3Server

pytestmark = [pytest.mark.s3]


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
