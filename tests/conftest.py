"""Test-wide fixtures: an isolated environment, a fast key derivation, marker gating."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging.repository import keys
from imaging.repository.store import Repository
from tests import s3server

PASSPHRASE = "correct horse battery staple"
WEAK_KDF = keys.KdfParams(memory=64, passes=1, lanes=1)  # tests only: fast unlocking


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HOURGLASS_* from the host leaks in, no host state is written; the key derivation
    is weak (tests only)."""
    for name in list(os.environ):
        if name.startswith("HOURGLASS_"):
            monkeypatch.delenv(name)
    # No test writes this machine's record of repositories seen (/var/lib/hourglass);
    # tests of that record set their own directory.
    monkeypatch.setenv("HOURGLASS_STATE_DIR", "none")
    monkeypatch.setattr(keys, "PASSPHRASE_KDF", WEAK_KDF)
    monkeypatch.setattr(keys, "RECOVERY_KDF", WEAK_KDF)


def _can_loop() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not Path("/dev/loop-control").exists():
        return "needs loop devices (/dev/loop-control)"
    if shutil.which("losetup") is None:
        return "needs losetup (util-linux)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    loop_reason = _can_loop()
    qemu_reason = None if shutil.which("qemu-system-x86_64") else "needs qemu-system-x86_64"
    # radosgw is installed (make deps) or installed by tests/s3server.sh, and run, as root.
    s3_reason = None if os.geteuid() == 0 else "needs root (the suite runs Ceph's radosgw)"
    for item in items:
        if loop_reason and (
            item.get_closest_marker("root") or item.get_closest_marker("integration")
        ):
            item.add_marker(pytest.mark.skip(reason=loop_reason))
        if qemu_reason and item.get_closest_marker("qemu"):
            item.add_marker(pytest.mark.skip(reason=qemu_reason))
        if s3_reason and item.get_closest_marker("s3"):
            item.add_marker(pytest.mark.skip(reason=s3_reason))


@pytest.fixture
def passphrase() -> str:
    return PASSPHRASE


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    """A fresh encrypted repository."""
    return Repository.init(tmp_path / "repo", passphrase=PASSPHRASE)


@pytest.fixture
def plain_repo(tmp_path: Path) -> Repository:
    """A fresh repository without encryption."""
    return Repository.init(tmp_path / "plain", encryption="none")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3server.S3Server]:
    """One radosgw for the session (tests/s3server.py), stopped at the end."""
    with s3server.running(tmp_path_factory.mktemp("s3") / "state") as server:
        yield server


_buckets = itertools.count()


@pytest.fixture
def s3_bucket(s3_server: s3server.S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A bucket name of this test's own (not created: ``init`` creates it), with the
    server's endpoint and keys in the environment and no host AWS settings."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    return f"hg-test-{os.getpid()}-{next(_buckets)}"
