"""The unattended runs' own mounts (http:// locations) go under each test's tmp_path, so a
test that checks nothing was left mounted sees only its own, not another worker's."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaging.unattended import locations


@pytest.fixture(autouse=True)
def mount_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "unattended-mounts"
    monkeypatch.setattr(locations, "MOUNT_ROOT", root)
    return root
