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
from tests import seaweedfs as seaweed

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


# How `make test` shares the two cores (pytest-xdist, `-n 2 --dist loadgroup
# --no-loadscope-reorder`: work goes out in the order below, each group to one worker).
# The group "vm" goes out first: the appliance build (about 13 minutes from scratch, by the
# first test that needs it) and the end-to-end recovery, the longest test. The other worker
# meanwhile runs everything that needs no appliance. The other tests of the appliance come
# last, longest first, to whichever worker is free: the build's file lock (tests/build/
# conftest.py) makes a worker that gets there early wait for the build, never build again.
VM_GROUP = "vm"
VM_FIRST = ("tests/e2e/", "tests/build/test_iso.py")
VM_LAST_ORDER = (  # longest first (seconds in a run of both workers, 2026-12-04)
    "tests/faults/test_power_loss.py",  # 653
    "tests/build/test_reproducible.py",  # 269
    "tests/build/test_boot.py",  # 5 boots: 2 to HOURGLASS-BOOT 123-189, 3 to READY 234-266
    "tests/build/test_provision.py",  # 2 boots to HOURGLASS-BOOT, 120-145
    "tests/build/test_run.py",  # 236
)


def _needs_vm(item: pytest.Item) -> bool:
    """Boots QEMU or uses the built appliance."""
    return bool(
        item.get_closest_marker("qemu")
        or item.get_closest_marker("e2e")
        or "appliance" in getattr(item, "fixturenames", ())
    )


def _path_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def _vm_rank(item: pytest.Item) -> int:
    path = _path_of(item)
    for rank, prefix in enumerate(VM_LAST_ORDER):
        if path.startswith(prefix):
            return rank
    return len(VM_LAST_ORDER)


def _schedule(items: list[pytest.Item]) -> None:
    """The order above, in place (stable: the order of the files within each part)."""
    vm = [i for i in items if _needs_vm(i)]
    first = [i for i in vm if _path_of(i).startswith(VM_FIRST)]
    for item in first:
        item.add_marker(pytest.mark.xdist_group(VM_GROUP))
    rest = [i for i in items if not _needs_vm(i)]
    last = sorted((i for i in vm if not _path_of(i).startswith(VM_FIRST)), key=_vm_rank)
    items[:] = first + rest + last


# First: xdist's own hook turns the xdist_group marks into the work units, so the marks
# must be on the items before it runs.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _schedule(items)
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


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3server.S3Server]:
    """One SeaweedFS `weed mini` for the session (tests/seaweedfs.py), the second engine."""
    with seaweed.running(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


_buckets = itertools.count()


def _bucket_on(server: s3server.S3Server, monkeypatch: pytest.MonkeyPatch, prefix: str) -> str:
    """A bucket name of the test's own (not created: ``init`` creates it), with
    ``server``'s endpoint and keys in the environment and no host AWS settings."""
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    return f"{prefix}-{os.getpid()}-{next(_buckets)}"


@pytest.fixture
def s3_bucket(s3_server: s3server.S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A bucket of the test's own on radosgw (:func:`_bucket_on`)."""
    return _bucket_on(s3_server, monkeypatch, "hg-test")


@pytest.fixture
def weed_bucket(seaweedfs: s3server.S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A bucket of the test's own on SeaweedFS (:func:`_bucket_on`)."""
    return _bucket_on(seaweedfs, monkeypatch, "hg-weed")
