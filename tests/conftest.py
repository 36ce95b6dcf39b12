"""Test-wide fixtures: an isolated environment, a fast key derivation, marker gating."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from imaging.repository import keys
from imaging.repository.store import Repository

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
    for item in items:
        if loop_reason and (
            item.get_closest_marker("root") or item.get_closest_marker("integration")
        ):
            item.add_marker(pytest.mark.skip(reason=loop_reason))
        if qemu_reason and item.get_closest_marker("qemu"):
            item.add_marker(pytest.mark.skip(reason=qemu_reason))


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
