"""Settings on the backup drive: round trip, tolerance of damaged files, read-only drives."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from imaging.appliance import settings
from imaging.appliance.settings import Settings
from imaging.errors import HourglassError


def test_round_trip(tmp_path: Path) -> None:
    assert settings.load(tmp_path) is None
    path = settings.save(tmp_path, Settings(language="zh_CN", theme="light"))
    assert path == tmp_path / "hourglass" / "settings.json"
    assert json.loads(path.read_text()) == {"language": "zh_CN", "theme": "light"}
    assert settings.load(tmp_path) == Settings(language="zh_CN", theme="light")


def test_damaged_or_foreign_values_fall_back_to_defaults(tmp_path: Path) -> None:
    (tmp_path / "hourglass").mkdir()
    file = tmp_path / "hourglass" / "settings.json"
    file.write_text("{not json")
    assert settings.load(tmp_path) == Settings()
    file.write_text(json.dumps({"language": "../../etc", "theme": 3, "future": "x"}))
    assert settings.load(tmp_path) == Settings()
    file.write_text(json.dumps(["a list"]))
    assert settings.load(tmp_path) == Settings()


def test_drive_root_is_the_mount_point_above(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    root = settings.drive_root(deep)
    assert os.path.ismount(root)
    assert str(deep.resolve()).startswith(str(root))


def test_log_file_is_named_by_the_session_start(tmp_path: Path) -> None:
    path = settings.log_file(tmp_path, datetime(2026, 11, 22, 10, 31, 5))
    assert path == tmp_path / "hourglass" / "logs" / "hourglass-20261122-103105.log"
    assert path.parent.is_dir()


@pytest.mark.root
@pytest.mark.integration  # mounts a tmpfs
def test_read_only_drive_is_an_error_with_a_hint(tmp_path: Path) -> None:
    drive = tmp_path / "ro"
    drive.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "hgro", str(drive)], check=True)
    try:
        with pytest.raises(HourglassError) as info:
            settings.save(drive, Settings(language="en"))
        assert "Cannot save the settings" in info.value.message
        assert info.value.hint
        assert settings.drive_root(drive) == drive
    finally:
        subprocess.run(["umount", str(drive)], check=False)
