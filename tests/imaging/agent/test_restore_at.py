"""`hourglass restore --at TIME`: the whole disk as of a second, the newest image at or before
it with the agent's file journal replayed onto the restored filesystems.

A real GPT disk (a root ext4 whose /etc/fstab mounts a data ext4 by UUID), imaged offline as
the appliance does; then the data partition mounted where its fstab says and the real agent
(fanotify) recording changes at known seconds; then restores to a blank disk as of seconds
between them, checked by mounting what was written."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging.journal.records import Entry, Event, Meta
from imaging.journal.replay import _touched, parse_fstab
from imaging.repository.store import Repository
from imaging.unattended.run import run_unattended
from tests.imaging.agent.recording import BEFORE, FIRST, Recorded, blank_disk, files_on, record
from tests.imaging.test_prompts import on_a_terminal
from tests.support import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    tmp = tmp_path_factory.mktemp("restore-at")
    Repository.init(tmp / "repo", encryption="none")
    return record(tmp, tmp / "repo")


@pytest.fixture
def blank(tmp_path: Path) -> Iterator[str]:
    with blank_disk(tmp_path) as dev:
        yield dev


def _restore(recorded: Recorded, target: str, at: str, *extra: str) -> int:
    return run_cli("restore", "--repo", recorded.repo, "--at", at, target, "--yes", *extra)


def test_as_of_each_second(
    recorded: Recorded, blank: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Between two writes the disk holds the first; at the second, the second; the rename,
    the delete and the create of that second are there and neither earlier nor later."""
    assert _restore(recorded, blank, recorded.seconds["first"]) == 0
    out = capsys.readouterr().out
    assert "Replayed the file journal of" in out, out
    assert files_on(blank, tmp_path / "m1") == FIRST

    assert _restore(recorded, blank, recorded.seconds["second"]) == 0
    assert files_on(blank, tmp_path / "m2") == {**FIRST, "a.txt": "version three, the last"}

    # After the agent's first rescan and before any change: the image as it was, the
    # rescan's versions found already on the disk (nothing written for them).
    assert _restore(recorded, blank, recorded.seconds["baseline"]) == 0
    out = capsys.readouterr().out
    assert "0 paths written" in out, out
    assert files_on(blank, tmp_path / "m3") == BEFORE


def test_as_of_a_second_with_new_ids(
    recorded: Recorded, blank: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The journal is replayed first, then the ids change: the root's fstab names the data
    partition by its new UUID, and the replayed files are there."""
    assert _restore(recorded, blank, recorded.seconds["second"], "--new-ids") == 0
    out = capsys.readouterr().out
    assert "Replayed the file journal of" in out and "partition 1: /etc/fstab (2)" in out, out
    assert files_on(blank, tmp_path / "m") == {**FIRST, "a.txt": "version three, the last"}


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
    assert files_on(blank, tmp_path / "m") == FIRST


def test_what_a_delete_or_rename_reaches() -> None:
    """Everything below a deleted or renamed directory, and nothing beside it that only
    shares the beginning of its name."""
    file = Meta(ftype="file", mode=0o644, uid=0, gid=0)
    folder = Meta(ftype="dir", mode=0o755, uid=0, gid=0)
    state = {
        "/a": Entry(meta=folder),
        "/a/x": Entry(meta=file),
        "/a/y/z": Entry(meta=file),
        "/a0": Entry(meta=file),
        "/ab": Entry(meta=file),
        "/b": Entry(meta=file),
    }
    events = [
        Event(ns=5, type="delete", path="/a"),
        Event(ns=6, type="rename", path="/b", to="/c"),
        Event(ns=20, type="delete", path="/ab"),  # after the second: not replayed
    ]
    assert _touched(events, 0, 10, state) == {"/a", "/a/x", "/a/y/z", "/b", "/c"}
    assert _touched(events, 5, 10, state) == {"/b", "/c"}  # at the image: in it already
