"""The app's pieces that need no disks: console detection, the disk scope, the partition
picture, the progress relay, the session log."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from imaging.disks.model import Disk, Partition
from imaging.jobs.disks import Scope
from imaging.progress import Progress
from recovery_ui.console import detect
from recovery_ui.logs import install, uninstall
from recovery_ui.messages import ProgressRelay
from recovery_ui.widgets.disk_map import segments


def test_console_kinds() -> None:
    kmscon = detect({"TERM": "xterm-256color"}, tty="/dev/tty1")
    assert (kmscon.kind, kmscon.cjk, kmscon.safe) == ("full", True, False)
    linux = detect({"TERM": "linux"}, tty="/dev/tty1")
    assert (linux.kind, linux.cjk) == ("linux", False)
    assert linux.glyphs.border == "solid" and linux.glyphs.used == "█"
    # The appliance's serial unit sets TERM=xterm-256color on ttyS0: the device decides.
    serial = detect({"TERM": "xterm-256color"}, tty="/dev/ttyS0")
    assert (serial.kind, serial.cjk) == ("serial", False)
    assert serial.glyphs.border == "ascii" and all(ord(c) < 128 for c in serial.glyphs.spinner)
    assert detect({"TERM": "vt220"}, tty="/dev/pts/3").kind == "serial"
    assert detect({"TERM": ""}, tty="").kind == "serial"
    # Overrides: the fallback unit on tty1, a serial terminal that can draw Chinese.
    assert detect({"TERM": "xterm", "HOURGLASS_CONSOLE": "linux"}, tty="").kind == "linux"
    assert detect({"TERM": "vt220", "HOURGLASS_CJK": "1"}, tty="/dev/ttyS0").cjk
    assert not detect({"TERM": "xterm-256color", "HOURGLASS_CJK": "0"}, tty="").cjk


def test_scope_from_the_environment(tmp_path: Path) -> None:
    assert Scope.from_environment({}).everything
    scope = Scope.from_environment({"HOURGLASS_DISKS": f"/dev/sdb, {tmp_path}"})
    assert scope.allows("/dev/sdb", "")
    assert not scope.allows("/dev/sda", "")
    assert scope.allows("/dev/loop7", str(tmp_path / "disk.img"))
    assert not scope.allows("/dev/loop8", str(tmp_path) + "-other/disk.img")


def _disk(*parts: tuple[int, int, int]) -> Disk:
    partitions = tuple(
        Partition(n, f"/dev/sda{n}", start, size, "", "") for n, start, size in parts
    )
    return Disk("/dev/sda", "", "M", "S", 1000, 512, 512, "sata", False, False, "gpt", partitions)


def test_partition_picture_is_proportional_and_never_loses_a_partition() -> None:
    disk = _disk((1, 0, 500), (2, 500, 250), (3, 750, 250))
    assert segments(disk, 40) == [(0, 0, 20), (1, 20, 10), (2, 30, 10)]
    tiny = _disk((1, 0, 1), (2, 1, 1), (3, 2, 996))
    shown = segments(tiny, 10)
    assert [index for index, _, _ in shown] == [0, 1, 2]
    assert all(columns >= 1 for _, _, columns in shown)
    ends = [start + columns for _, start, columns in shown]
    assert ends == sorted(ends) and ends[-1] <= 10
    starts = [start for _, start, _ in shown]
    assert all(b >= a for a, b in zip(ends, starts[1:], strict=False))


class _Target:
    def __init__(self) -> None:
        self.posted: list[object] = []

    def post_message(self, message: object) -> bool:
        self.posted.append(message)
        return True


def _event(done: int) -> Progress:
    return Progress("backup", done, 100, 1.0)


def test_progress_relay_replaces_instead_of_queueing() -> None:
    target = _Target()
    relay = ProgressRelay(target)  # type: ignore[arg-type]
    threads = [threading.Thread(target=relay, args=(_event(i),)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(target.posted) == 1  # one message pending, however many events came
    assert relay.take() is not None and relay.take() is None
    relay(_event(99))
    assert len(target.posted) == 2
    taken = relay.take()
    assert taken is not None and taken.done == 99


def test_session_log_keeps_lines_and_copies_them_to_a_file(tmp_path: Path) -> None:
    handler = install()
    try:
        heard: list[str] = []
        handler.listen(heard.append)
        logging.getLogger("imaging.test").info("first line")
        handler.write_to(tmp_path / "session.log")
        logging.getLogger("recovery_ui").warning("second line")
        logging.getLogger("somebody.else").warning("not ours")
        assert any("first line" in line for line in handler.lines)
        assert len(heard) == 2
        text = (tmp_path / "session.log").read_text()
        assert "first line" in text and "second line" in text and "not ours" not in text
    finally:
        uninstall(handler)


def test_deduplication_never_calls_a_factor_of_one_a_saving() -> None:
    from recovery_ui import i18n, text

    before = i18n.current()
    try:
        for language in ("en", "zh_CN"):
            i18n.set_language(language)
            for data, unique in [(100, 100), (1_000_000, 999_000), (1_049_000, 1_000_000)]:
                line = text.deduplication(data, unique)
                assert "1.0x" not in line and "1/1.0" not in line, (language, line)
            assert "1.0 MB" in text.deduplication(3_000_000, 1_000_000)
            assert "3.0" in text.deduplication(3_000_000, 1_000_000)
        i18n.set_language("en")
        assert text.deduplication(100, 100).endswith("no block repeats")
        assert text.deduplication(0, 0).endswith("no block repeats")
        assert text.deduplication(1_000_000, 950_000).endswith(", 5% less")
        assert text.deduplication(1_000_000, 999_990).endswith(", 1% less")  # never "0% less"
        assert text.deduplication(1_800_000, 1_000_000).endswith(", 1.8x less")
    finally:
        i18n.set_language(before)


def test_a_backup_under_a_second_does_not_say_zero() -> None:
    from recovery_ui import i18n, text

    before = i18n.current()
    try:
        i18n.set_language("en")
        assert text.time_taken(0.3) == "Time taken: under a second"
        assert text.time_taken(1.2) == "Time taken: 0:01"
        assert text.time_taken(3725) == "Time taken: 1:02:05"
        i18n.set_language("zh_CN")
        assert "0:00" not in text.time_taken(0.3) and "Time" not in text.time_taken(0.3)
    finally:
        i18n.set_language(before)


def test_file_names_are_listed_as_a_file_manager_lists_them() -> None:
    from recovery_ui.text import name_order

    names = ["d10", "D2", "d2", "d1", "a", "Photo 12.jpg", "photo 9.jpg", "b", "d02", "10", "9"]
    assert sorted(names, key=name_order) == [
        "9", "10", "a", "b", "d1", "D2", "d02", "d2", "d10", "photo 9.jpg", "Photo 12.jpg"
    ]  # fmt: skip
