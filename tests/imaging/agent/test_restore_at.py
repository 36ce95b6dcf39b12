"""`hourglass restore --at TIME`: the whole disk as of a second, the newest image at or before
it with the agent's file journal replayed onto the restored filesystems.

A real GPT disk (a root ext4 whose /etc/fstab mounts a data ext4 by UUID), imaged offline as
the appliance does; then the data partition mounted where its fstab says and the real agent
(fanotify) recording changes at known seconds; then restores to a blank disk as of seconds
between them, checked by mounting what was written."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from imaging.agent.config import AgentConfig
from imaging.jobs.agent import run_agent
from imaging.journal.replay import parse_fstab
from imaging.repository.store import Repository
from imaging.unattended.run import run_unattended
from tests.imaging.agent.test_agent import _next_second, _Running, _state, _wait
from tests.imaging.disks import helpers
from tests.imaging.test_prompts import on_a_terminal
from tests.support import run_cli, sh

pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.slow]

DISK_MIB = 200
LAYOUT = [
    helpers.GptPart(1, "ext4", 64, "8304", "root", "root"),
    helpers.GptPart(2, "ext4", 96, "8302", "home", "home"),
]


def _second(when: float) -> str:
    return datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M:%S")


def _uuid(dev: str) -> str:
    return sh("blkid", "-s", "UUID", "-o", "value", dev).stdout.strip()


@dataclass
class Recorded:
    repo: Path
    source: Path  # the disk image that was protected
    data: Path  # where the data partition was mounted on the "host" (its fstab says so)
    seconds: dict[str, str]  # moment name -> "YYYY-MM-DD HH:MM:SS"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    tmp = tmp_path_factory.mktemp("restore-at")
    repo_dir = tmp / "repo"
    Repository.init(repo_dir, encryption="none")
    image = tmp / "pc.img"
    helpers.make_gpt_disk(image, LAYOUT, DISK_MIB)
    data = tmp / "home"
    data.mkdir()
    seconds: dict[str, str] = {}
    with helpers.attached(image) as dev:
        root_dev, data_dev = helpers.node(dev, 1), helpers.node(dev, 2)
        helpers.make_fs(root_dev, "ext4", "root")
        helpers.make_fs(data_dev, "ext4", "home")
        with helpers.mounted_fs(root_dev, "ext4", tmp / "root") as root:
            (root / "etc").mkdir()
            (root / "etc" / "hostname").write_text(socket.gethostname() + "\n")
            (root / "etc" / "fstab").write_text(
                "# <file system> <mount point> <type> <options> <dump> <pass>\n"
                f"UUID={_uuid(root_dev)} / ext4 errors=remount-ro 0 1\n"
                f"UUID={_uuid(data_dev)} {data} ext4 defaults 0 2\n"
                f"nas:/export {data}/nas nfs defaults 0 0\n"
                "/swapfile none swap sw 0 0\n"
            )
        with helpers.mounted_fs(data_dev, "ext4", data):
            (data / "keep.txt").write_text("never changes")
            (data / "a.txt").write_text("version one")
            (data / "gone.txt").write_text("deleted later")
            (data / "dir" / "sub").mkdir(parents=True)
            (data / "dir" / "sub" / "x.txt").write_text("in a folder that is renamed")
        # The image, taken offline as the appliance takes it.
        assert run_cli("backup", "--repo", repo_dir, dev) == 0
        seconds["image"] = _second(time.time())
        _next_second()
        with helpers.mounted_fs(data_dev, "ext4", data):
            config = AgentConfig(
                location=str(repo_dir),
                passphrase_file=None,
                paths=(str(data),),
                interval=0.5,
                commit_interval=0.3,
                settle=0.1,
                state_dir=str(tmp / "state"),
            )
            with _Running(config):
                # the first rescan records every file, after the image: nothing to replay
                assert _wait(lambda: str(data / "keep.txt") in _state(repo_dir), 10.0)
                _next_second()
                seconds["baseline"] = _second(time.time())
                _next_second()
                (data / "a.txt").write_text("version two")
                (data / "new.txt").write_text("created after the image")
                (data / "gone.txt").unlink()
                os.rename(data / "dir", data / "dir2")
                assert _wait(
                    lambda: (
                        str(data / "dir2" / "sub" / "x.txt") in (s := _state(repo_dir))
                        and str(data / "gone.txt") not in s
                        and s[str(data / "a.txt")].meta.size == len("version two")
                        and str(data / "new.txt") in s
                    ),
                    10.0,
                )
                seconds["first"] = _second(time.time())
                _next_second()
                (data / "a.txt").write_text("version three, the last")
                assert _wait(
                    lambda: (
                        _state(repo_dir)[str(data / "a.txt")].meta.size
                        == len("version three, the last")
                    ),
                    10.0,
                )
                seconds["second"] = _second(time.time())
    run_agent(config, once=True)  # stopped with nothing pending: the journal is complete
    yield Recorded(repo_dir, image, data, seconds)


@pytest.fixture
def blank(tmp_path: Path) -> Iterator[str]:
    image = tmp_path / "new-disk.img"
    sh("truncate", "-s", f"{DISK_MIB}M", image)
    with helpers.attached(image) as dev:
        yield dev


def _restore(recorded: Recorded, target: str, at: str, *extra: str) -> int:
    return run_cli("restore", "--repo", recorded.repo, "--at", at, target, "--yes", *extra)


def _files(dev: str, where: Path) -> dict[str, str]:
    subprocess.run(["partx", "--delete", dev], check=False, capture_output=True)
    subprocess.run(["partx", "--add", dev], check=False, capture_output=True)
    assert helpers.fsck(helpers.node(dev, 2), "ext4").returncode == 0
    out = {}
    with helpers.mounted_fs(helpers.node(dev, 2), "ext4", where, read_only=True) as root:
        for path in sorted(root.rglob("*")):
            if path.is_file() and "lost+found" not in path.parts:
                out[str(path.relative_to(root))] = path.read_text()
    return out


BEFORE = {
    "a.txt": "version one",
    "dir/sub/x.txt": "in a folder that is renamed",
    "gone.txt": "deleted later",
    "keep.txt": "never changes",
}
FIRST = {
    "a.txt": "version two",
    "dir2/sub/x.txt": "in a folder that is renamed",
    "keep.txt": "never changes",
    "new.txt": "created after the image",
}


def test_as_of_each_second(
    recorded: Recorded, blank: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Between two writes the disk holds the first; at the second, the second; the rename,
    the delete and the create of that second are there and neither earlier nor later."""
    assert _restore(recorded, blank, recorded.seconds["first"]) == 0
    out = capsys.readouterr().out
    assert "Replayed the file journal of" in out, out
    assert _files(blank, tmp_path / "m1") == FIRST

    assert _restore(recorded, blank, recorded.seconds["second"]) == 0
    assert _files(blank, tmp_path / "m2") == {**FIRST, "a.txt": "version three, the last"}

    # After the agent's first rescan and before any change: the image as it was, the
    # rescan's versions found already on the disk (nothing written for them).
    assert _restore(recorded, blank, recorded.seconds["baseline"]) == 0
    out = capsys.readouterr().out
    assert "0 paths written" in out, out
    assert _files(blank, tmp_path / "m3") == BEFORE


def test_refused_before_anything_is_written(
    recorded: Recorded, blank: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second before the image, another host's journal, a file as target: each refused
    with what to do, and the blank disk is still blank."""
    assert _restore(recorded, blank, "2001-01-01 00:00:00") == 5  # not found
    assert "No snapshot was taken at or before" in capsys.readouterr().err
    assert _restore(recorded, blank, recorded.seconds["first"], "--host", "elsewhere") == 2
    assert "no file journal of the host elsewhere" in capsys.readouterr().err
    target_file = tmp_path / "disk.img"
    assert _restore(recorded, str(target_file), recorded.seconds["first"]) == 2
    assert "is not a disk" in capsys.readouterr().err
    assert not target_file.exists()
    with open(blank, "rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)


def test_the_plan_is_in_the_confirmation(recorded: Recorded, blank: str) -> None:
    """Without --yes the question names the disk, the image and what the replay will do;
    answering no writes nothing."""
    argv = ["restore", "--repo", str(recorded.repo), "--at", recorded.seconds["first"], blank]
    code, said = on_a_terminal(argv, b"Type yes", b"no\n", dict(os.environ))
    assert code != 0
    assert "nothing was changed" in said, said
    assert blank in said
    assert "Then the file journal of" in said, said
    assert "replayed up to " + recorded.seconds["first"] in said
    assert "on no partition of this disk" not in said
    with open(blank, "rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)


def test_fstab_lines() -> None:
    """The lines that mount something, escapes undone; swap and comments skipped."""
    text = (
        "# comment\n"
        "UUID=abcd / ext4 defaults 0 1\n"
        "LABEL=My\\040Data /srv/my\\040data xfs noatime 0 2\n"
        "UUID=ef01 none swap sw 0 0\n"
        "/dev/sdb1 /mnt/x btrfs subvol=@home 0 0\n"
    )
    assert parse_fstab(text) == [
        ("UUID=abcd", "/", "ext4", "defaults"),
        ("LABEL=My Data", "/srv/my data", "xfs", "noatime"),
        ("/dev/sdb1", "/mnt/x", "btrfs", "subvol=@home"),
    ]


def test_unattended_snapshot_to_the_second(
    recorded: Recorded, blank: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`hourglass.snapshot=TIME` to the second in a repository with a journal: the same whole
    system as of that second, and the result line says what was replayed."""
    said: list[str] = []
    outcome = run_unattended(
        f"hourglass.run=restore hourglass.repo={recorded.repo} hourglass.target={blank} "
        f"hourglass.snapshot={recorded.seconds['first'].replace(' ', 'T')} hourglass.after=shell",
        say=said.append,
    )
    assert outcome.ok, outcome.line
    assert "Replayed the file journal of" in outcome.line, outcome.line
    capsys.readouterr()
    assert _files(blank, tmp_path / "m") == FIRST
