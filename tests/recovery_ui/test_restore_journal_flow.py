"""Restore files from a host's file journal through the app: the host's file history on the
timeline, a time typed to the second, the tree as of that second (a deleted file there
before its delete, a new one only after it is made), files restored as of either second,
and the versions of a file with the gap the agent recorded while it did not run."""

from __future__ import annotations

import contextlib
import io
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from imaging.agent.config import AgentConfig
from imaging.jobs.agent import run_agent
from imaging.jobs.files import JournalGap
from imaging.journal.records import Event, Meta
from imaging.journal.segments import SegmentWriter
from imaging.repository.store import Repository, Snapshot
from recovery_ui import text
from recovery_ui.app import HourglassApp
from recovery_ui.i18n import _, set_language
from recovery_ui.screens.restore_files import FileTree, RestoreFilesScreen
from recovery_ui.widgets.steps import Steps
from tests.conftest import PASSPHRASE
from tests.recovery_ui.conftest import (
    THESIS,
    Drive,
    Part,
    disk,
    mounted,
    screen_text,
    settle,
    shot,
)
from tests.recovery_ui.flows import choose_option, open_found_repository, type_text

V1 = "A, version one\n"
V2 = "A, version two: longer\n"


@dataclass
class Journal:
    """A backup drive whose repository holds the file journal of a host folder, written
    by the agent in two passes a second apart or more."""

    drive: Drive
    host: Path
    first: datetime
    """A second after the first pass: A is version one, C is there, B is not."""
    second: datetime
    """A second after the second pass: A is version two, B is there, C is deleted."""

    @property
    def a(self) -> str:
        return str(self.host / "docs" / "a.txt")

    @property
    def b(self) -> str:
        return str(self.host / "docs" / "b.txt")

    @property
    def c(self) -> str:
        return str(self.host / "docs" / "c.txt")


def _next_second() -> None:
    time.sleep(1.05 - (time.time() % 1))


def _now() -> datetime:
    return datetime.fromtimestamp(int(time.time())).astimezone()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with contextlib.ExitStack() as stack:
        drive = stack.enter_context(
            disk(tmp_path / "drive.img", [Part(1, "ext4", 48, "BACKUP")], 56)
        )
        host_disk = stack.enter_context(
            disk(tmp_path / "host.img", [Part(1, "ext4", 32, "HOST")], 40)
        )
        host = tmp_path / "host"
        with mounted(f"{drive}p1", tmp_path / "drive") as root, mounted(f"{host_disk}p1", host):
            Repository.init(root / "hourglass-backups", passphrase=PASSPHRASE)
            (tmp_path / "passphrase").write_text(PASSPHRASE)
            config = AgentConfig(
                location=str(root / "hourglass-backups"),
                passphrase_file=str(tmp_path / "passphrase"),
                paths=(str(host),),
                interval=1.0,
                commit_interval=0.3,
                settle=0.1,
                state_dir=str(tmp_path / "state"),
            )
            docs = host / "docs"
            docs.mkdir()
            (docs / "a.txt").write_text(V1)
            (docs / "c.txt").write_text("C, deleted later\n")
            run_agent(config, once=True)
            first = _now()
            # The agent stopped: what changes now it finds when it starts again, and it
            # records the time it did not run as a gap.
            _next_second()
            (docs / "a.txt").write_text(V2)
            (docs / "b.txt").write_text("B, new\n")
            (docs / "c.txt").unlink()
            run_agent(config, once=True)
            second = _now()
        yield Journal(Drive(drive, f"{drive}p1", tmp_path / "drive.img"), host, first, second)


async def open_folder(pilot: Pilot[Any], path: str) -> None:
    tree = pilot.app.screen.query_one("#tree", FileTree)
    node = tree.reveal(path)
    assert node is not None, f"{path} is not in the tree"
    if not node.is_expanded:
        tree.move_cursor(node)
        await pilot.press("enter")
        await settle(pilot)


async def browse_at(pilot: Pilot[Any], when: datetime | str) -> None:
    """In the "as of" step: type the time, Enter."""
    field = pilot.app.screen.query_one("#at-time", Input)
    field.focus()
    field.value = ""
    await type_text(pilot, when if isinstance(when, str) else when.strftime("%Y-%m-%d %H:%M:%S"))
    await pilot.press("enter")
    await settle(pilot)


async def restore_to(pilot: Pilot[Any], stick: Drive, folder: str) -> None:
    await settle(pilot)
    await choose_option(pilot, "dests", stick.partition)
    field = pilot.app.screen.query_one("#dest-folder", Input)
    field.value = ""
    await type_text(pilot, folder)
    await pilot.press("enter")
    await settle(pilot, timeout=120)


def restore_screen(app: HourglassApp) -> RestoreFilesScreen:
    screen = app.screen
    assert isinstance(screen, RestoreFilesScreen)
    return screen


@pytest.mark.integration
@pytest.mark.root
@pytest.mark.parametrize("language", ["en", "zh_CN"])
async def test_files_as_of_a_second_from_the_journal(
    make_app: Callable[..., HourglassApp],
    journal: Journal,
    stick: Drive,
    tmp_path: Path,
    language: str,
) -> None:
    host = socket.gethostname()
    app = make_app(language=language)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await open_found_repository(pilot)
        shot(app, f"journal-timeline-{language}")
        screen = restore_screen(app)
        # A time typed on the timeline: with no disk snapshot, one of the host's journal.
        screen.query_one("#typed", Input).focus()
        await type_text(pilot, "soon")
        await pilot.press("enter")
        await settle(pilot)
        assert screen.pane == "at"
        assert "soon" in str(screen.query_one("#at-error").render())
        await pilot.press("escape")
        assert screen.pane == "when"
        await choose_option(pilot, "timeline", f"journal:{host}")
        await settle(pilot)
        assert screen.pane == "at"
        assert str(screen.query_one("#at-error").render()) == ""
        # A journal has no partitions: the steps line leaves that step out, numbered on.
        steps = str(screen.query_one(Steps).render())
        assert _("Partition") not in steps and re.findall(r"\d", steps) == list("12345"), steps
        # Prefilled with the newest recovery point: a second at or after the second pass.
        prefilled = screen.query_one("#at-time", Input).value
        assert prefilled >= journal.second.strftime("%Y-%m-%d %H:%M:%S"), prefilled
        shot(app, f"journal-at-{language}")

        # A time that cannot be read: said, and nothing else happens.
        await browse_at(pilot, "the day before")
        assert screen.pane == "at"
        assert "the day before" in str(screen.query_one("#at-error").render())
        # Before the journal begins: said too.
        await browse_at(pilot, "2001-02-03 04:05:06")
        assert screen.pane == "at"
        assert "2001-02-03" not in str(screen.query_one("#at-error").render())
        assert str(screen.query_one("#at-error").render())
        shot(app, f"journal-at-error-{language}")

        # As of the first second: A (version one) and C, no B.
        await browse_at(pilot, journal.first)
        assert screen.pane == "browse"
        await open_folder(pilot, str(journal.host / "docs"))
        tree = screen.query_one("#tree", FileTree)
        assert tree.reveal(journal.c) is not None
        assert tree.reveal(journal.b) is None
        node = tree.reveal(journal.a)
        assert node is not None
        tree.focus()
        tree.move_cursor(node)
        await pilot.press("enter")  # the versions of A
        await settle(pilot)
        table = screen.query_one("#versions", DataTable)
        kinds = [v.event.type for _, v in screen.journal_rows]
        assert kinds.count("write") == 2 and "gap" in kinds, kinds
        assert table.row_count == len(kinds)
        # The gap the agent recorded while it did not run, as a row of its own.
        [gap] = [i for i, (_, v) in enumerate(screen.journal_rows) if v.event.type == "gap"]
        assert table.get_row(f"j{gap}")[1] == _("not watched") + "\n" + _("agent stopped")
        shot(app, f"journal-browse-{language}")
        await pilot.press("space")
        await pilot.press("r")
        await settle(pilot)
        shot(app, f"journal-dest-{language}")
        await restore_to(pilot, stick, "first")
        assert screen.pane == "result"
        assert screen.query_one("#result-title").has_class("good")
        shot(app, f"journal-result-{language}")

        # As of the later second: B is there, C is not; A is version two.
        await pilot.click("#more")
        await settle(pilot)
        await pilot.press("escape")  # back to the time
        assert screen.pane == "at"
        await browse_at(pilot, journal.second)
        await open_folder(pilot, str(journal.host / "docs"))
        tree = screen.query_one("#tree", FileTree)
        assert tree.reveal(journal.b) is not None
        assert tree.reveal(journal.c) is None
        shot(app, f"journal-browse-later-{language}")
        # The folder, marked: as it was then, B in it and C not.
        folder = tree.reveal(str(journal.host / "docs"))
        assert folder is not None
        tree.focus()
        tree.move_cursor(folder)
        await pilot.press("space")
        node = tree.reveal(journal.a)
        assert node is not None
        tree.move_cursor(node)
        await pilot.press("enter")  # the versions of A, for the pick below
        await settle(pilot)
        await pilot.press("r")
        await restore_to(pilot, stick, "second")
        assert screen.query_one("#result-title").has_class("good")

        # Version one, picked in the versions table (newest first: the last write row).
        await pilot.click("#more")
        await settle(pilot)
        table = screen.query_one("#versions", DataTable)
        writes = [i for i, (_, v) in enumerate(screen.journal_rows) if v.event.type == "write"]
        table.focus()
        table.move_cursor(row=table.get_row_index(f"j{writes[0]}"))
        await pilot.press("enter")
        await restore_to(pilot, stick, "picked")
        assert screen.query_one("#result-title").has_class("good")
    with mounted(stick.partition, tmp_path / "check") as root:
        assert (root / "first" / "a.txt").read_text() == V1
        assert (root / "second" / "docs" / "a.txt").read_text() == V2
        assert sorted(p.name for p in (root / "second" / "docs").iterdir()) == ["a.txt", "b.txt"]
        assert (root / "picked" / "a.txt").read_text() == V1


def test_a_gap_reads_as_a_span_or_an_instant() -> None:
    set_language("en")  # an app run before may have left another
    base = 1_780_000_000 * 10**9
    span = JournalGap(base, base + 65 * 10**9, "not running", None, ("/home",))
    start, end = text.when(text.moment(base)), text.when(text.moment(base + 65 * 10**9))
    assert text.gap_line(span) == (f"Not watched from {start} to {end}: the agent was not running")
    instant = JournalGap(base, base, "unreadable", "/home/a: Permission denied", ("/home",))
    assert text.gap_line(instant) == (
        f"At {start}: a file could not be read (/home/a: Permission denied)"
    )
    assert text.gap_cause(JournalGap(base, base, "something new", None, ())) == "something new"


@pytest.mark.integration
@pytest.mark.root
async def test_journal_versions_beside_disk_versions(
    make_app: Callable[..., HourglassApp],
    template: tuple[Path, list[Snapshot]],
    backup_drive: Drive,
    stick: Drive,
    tmp_path: Path,
) -> None:
    """Browsing a disk snapshot of a repository that also holds a journal of the same path:
    the versions table lists both, newest first, and a journal version restores."""
    journal_text = b"My thesis, saved by the agent.\n"
    with mounted(backup_drive.partition, tmp_path / "fill") as root:
        repo = Repository.open(root / "hourglass-backups", PASSPHRASE)
        now = time.time_ns()
        with SegmentWriter(repo, ("/home",), (), None, set(), hostname="pc") as w:
            ids, size, new = w.store(io.BytesIO(journal_text))
            meta = Meta(ftype="file", mode=0o100644, uid=0, gid=0, size=size, mtime_ns=now)
            w.add(Event(ns=now, type="write", path=THESIS, meta=meta, chunks=ids, new=new))
            w.commit()
    newest = template[1][1]
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await open_found_repository(pilot)
        await choose_option(pilot, "timeline", newest.id)
        await settle(pilot)
        await choose_option(pilot, "images", "p2")
        await settle(pilot)
        screen = restore_screen(app)
        await open_folder(pilot, "/home")
        await open_folder(pilot, "/home/ann")
        tree = screen.query_one("#tree", FileTree)
        node = tree.reveal(THESIS)
        assert node is not None
        tree.focus()
        tree.move_cursor(node)
        await pilot.press("enter")
        await settle(pilot)
        table = screen.query_one("#versions", DataTable)
        keys = [str(row.value) for row in table.rows]
        # Two disk versions (first and second draft), the journal's version the newest.
        assert sorted(keys) == ["d0", "d1", "j0"] and keys[0] == "j0", keys
        shot(app, "journal-beside-disk-en")
        table.focus()
        table.move_cursor(row=0)
        await pilot.press("enter")
        await restore_to(pilot, stick, "journal")
        assert screen.query_one("#result-title").has_class("good")
        # The same again into the same folder: refused, said, nothing replaced.
        await pilot.click("#more")
        await settle(pilot)
        table.focus()
        table.move_cursor(row=0)
        await pilot.press("enter")
        await restore_to(pilot, stick, "journal")
        assert "journal already holds thesis.txt" in screen_text(app)
        shot(app, "journal-clash-en")
        await pilot.press("enter")  # the dialog's button
        await settle(pilot)
        assert screen.pane == "dest"
    with mounted(stick.partition, tmp_path / "check") as root:
        assert (root / "journal" / "thesis.txt").read_bytes() == journal_text
