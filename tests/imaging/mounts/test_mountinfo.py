"""Reading /proc/self/mountinfo: the fields, the octal escapes, and a real mount."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imaging.mounts import mountinfo
from imaging.mounts.mount import unmount
from tests.support import sh

LINE = (
    r"36 35 98:0 /mnt1 /mnt/with\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
)


def test_a_line_is_read_field_by_field() -> None:
    m = mountinfo.parse_line(LINE)
    assert m is not None
    assert (m.mount_id, m.parent_id, m.major, m.minor) == (36, 35, 98, 0)
    assert (m.root, m.mountpoint) == ("/mnt1", "/mnt/with space")
    assert m.options == ("rw", "noatime")
    assert (m.fstype, m.source) == ("ext3", "/dev/root")
    assert m.super_options == ("rw", "errors=continue")
    assert not m.read_only


def test_read_only_is_per_mount_or_per_filesystem() -> None:
    per_mount = mountinfo.parse_line("1 0 8:1 / /a ro,relatime - ext4 /dev/sda1 rw")
    per_filesystem = mountinfo.parse_line("2 0 8:2 / /b rw - ext4 /dev/sda2 ro,data=ordered")
    assert per_mount is not None and per_mount.read_only
    assert per_filesystem is not None and per_filesystem.read_only


def test_escapes_of_tab_newline_and_backslash() -> None:
    assert mountinfo.unescape(r"a\011b\012c\134d\040e") == "a\tb\nc\\d e"


def test_lines_that_are_not_mounts_are_skipped() -> None:
    assert mountinfo.parse_line("") is None
    assert mountinfo.parse_line("1 0 8:1 / /a rw") is None  # no " - " separator
    assert mountinfo.parse_line("x 0 8:1 / /a rw - ext4 /dev/sda1 rw") is None


@pytest.mark.root
def test_a_mount_at_a_path_with_a_space(tmp_path: Path) -> None:
    where = tmp_path / "a dir\twith blanks"
    where.mkdir()
    source = f"hourglass test {os.getpid()}"  # this process's own: no other test mounts it
    sh("mount", "-t", "tmpfs", "-o", "size=1m", source, where)
    try:
        assert mountinfo.is_mounted(where)
        (found,) = [m for m in mountinfo.mounts() if m.mountpoint == str(where)]
        assert (found.fstype, found.source) == ("tmpfs", source)
        assert mountinfo.mounts_of_source(source) == [str(where)]
        inside = mountinfo.filesystem_of(where)
        assert inside is not None and inside.mountpoint == str(where)
    finally:
        unmount(str(where))
    assert not mountinfo.is_mounted(where)
    assert where.is_dir()  # unmount leaves the directory unless asked to remove it


def test_the_filesystem_of_a_path_that_is_not_there() -> None:
    assert mountinfo.filesystem_of("/nonexistent/hourglass") is None
    assert mountinfo.filesystem_of(os.getcwd()) is not None
