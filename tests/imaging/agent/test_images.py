"""Whether a host can be imaged while it runs, as `agent status` says it: btrfs (read-only
snapshots) and LVM could; a plain filesystem on a partition cannot, and whole-system images
then come from the appliance. On real filesystems on loop devices (no device-mapper here: the
LVM case is only recognised through /sys, as on a host)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaging.agent.images import system_view
from tests.imaging.agent.test_agent import _config, fs
from tests.support import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.root]

__all__ = ["fs"]


def test_the_view_of_each_filesystem(fs: Path) -> None:
    view = system_view(str(fs))
    kind = view.fstype
    assert kind in ("ext4", "xfs", "btrfs")
    assert view.source.startswith("/dev/loop")
    if kind == "btrfs":
        assert view.kind == "btrfs"
        assert "read-only btrfs snapshots" in view.describe()
    else:
        assert view.kind == "none"
        assert "Whole-system images come from the appliance" in view.describe()
        assert f"{fs} is {kind} on /dev/loop" in view.describe()


def test_status_says_where_images_come_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`agent status` names the system's filesystem and the case it is in (this machine's
    root is a plain filesystem on a disk)."""
    config = _config(tmp_path, tmp_path)
    toml = tmp_path / "agent.toml"
    toml.write_text(
        f'[repository]\nlocation = "{config.location}"\n[protect]\npaths = ["{tmp_path}"]\n'
        f'[agent]\nstate_dir = "{config.state_dir}"\n'
    )
    assert run_cli("agent", "status", "--config", str(toml)) == 0
    out = capsys.readouterr().out
    root = system_view("/")
    assert f"Whole-system recovery points: {root.describe()}" in out
    assert run_cli("agent", "status", "--config", str(toml), "--json") == 0
    assert f'"kind": "{root.kind}"' in capsys.readouterr().out
