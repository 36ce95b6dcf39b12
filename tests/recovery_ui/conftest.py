"""Disks and repositories for the app's tests: loop devices with real GPT tables and real
filesystems holding real files, and a real repository on a real backup drive.

The app is limited to the disks made here (``Scope``): the machine's other loop devices
(other tests, other people) are none of its business.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.worker import WorkerState

from imaging.disks import mounts, sysfs
from imaging.jobs.disks import Scope
from imaging.repository.store import Repository, Snapshot
from recovery_ui.app import HourglassApp
from recovery_ui.console import Terminal
from tests.conftest import PASSPHRASE
from tests.imaging.disks import helpers
from tests.recovery_ui.tmux import HOURGLASS, Tmux
from tests.support import MiB, sh

FULL = Terminal("full", True, "tests")
SHOTS = os.environ.get("HOURGLASS_TEST_SHOTS", "")  # read before the tests clear HOURGLASS_*


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests (Textual's pilot) in a fresh event loop."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


THESIS = "/home/ann/thesis.txt"


@dataclass
class Part:
    number: int
    fstype: str
    size_mib: int
    label: str


SOURCE_LAYOUT = [
    Part(1, "vfat", 40, "ESP"),
    Part(2, "ext4", 64, "root"),
    Part(3, "ext4", 32, "data"),
]


def make_disk(image: Path, layout: list[Part], disk_mib: int) -> None:
    image.unlink(missing_ok=True)
    sh("truncate", "-s", f"{disk_mib}M", image)
    argv = ["sgdisk", "--clear", "--set-alignment=2048"]
    for p in layout:
        code = "ef00" if p.fstype == "vfat" else "8300"
        argv += [f"--new={p.number}:0:+{p.size_mib}M", f"--typecode={p.number}:{code}"]
        argv += [f"--change-name={p.number}:{p.label}"]
    sh(*argv, image)


def unmount_all(device: str) -> None:
    """Whatever the app mounted of ``device``'s partitions (probe, locations)."""
    names = {p.device for p in sysfs.partitions(sysfs.name_of(device))} | {device}
    for m in reversed(mounts.mounts()):
        if m.source in names:
            subprocess.run(["umount", m.mountpoint], check=False, capture_output=True)
            with contextlib.suppress(OSError):
                os.rmdir(m.mountpoint)


@contextlib.contextmanager
def disk(image: Path, layout: list[Part], disk_mib: int) -> Iterator[str]:
    """A loop device with a GPT and a filesystem in each partition."""
    make_disk(image, layout, disk_mib)
    with helpers.attached(image) as device:
        try:
            for p in layout:
                if p.fstype:
                    helpers.make_fs(f"{device}p{p.number}", p.fstype, p.label)
            yield device
        finally:
            unmount_all(device)


@contextlib.contextmanager
def mounted(device: str, where: Path) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    sh("mount", device, where)
    try:
        yield where
    finally:
        sh("umount", where)


def write_thesis(device: str, where: Path, version: str) -> None:
    with mounted(device, where) as root:
        thesis = root / THESIS.lstrip("/")
        thesis.parent.mkdir(parents=True, exist_ok=True)
        thesis.write_text(f"My thesis, {version}.\n")
        os.utime(thesis, (1_700_000_000, 1_700_000_000 + len(version)))


@dataclass
class Source:
    device: str
    image: Path


@pytest.fixture(scope="session")
def ui_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui")


@pytest.fixture(scope="session")
def source(ui_base: Path) -> Iterator[Source]:
    """The PC's disk: ESP, root (with /home/ann/thesis.txt and real files), data."""
    for tool in ("sgdisk", "partx", "mkfs.vfat", "partclone.extfs"):
        if not shutil.which(tool):
            pytest.skip(f"needs {tool}")
    work = ui_base / "source"
    work.mkdir()
    with disk(work / "pc.img", SOURCE_LAYOUT, 140) as device:
        helpers.put_files(f"{device}p2", "ext4", work, 3 * MiB, 2)
        helpers.put_files(f"{device}p3", "ext4", work, 2 * MiB, 3)
        write_thesis(f"{device}p2", work / "mnt", "first draft")
        yield Source(device, work / "pc.img")


@pytest.fixture(scope="session")
def template(source: Source, ui_base: Path) -> tuple[Path, list[Snapshot]]:
    """A repository with two snapshots of the source; the thesis changed between them."""
    from imaging.image.backup import run_backup
    from imaging.image.plan import plan_for

    path = ui_base / "template" / "hourglass-backups"
    repo = Repository.init(path, passphrase=PASSPHRASE)
    first = run_backup(repo, plan_for([source.device]))
    time.sleep(1.1)  # snapshots are named to the second
    write_thesis(f"{source.device}p2", ui_base / "source" / "mnt", "second draft")
    second = run_backup(repo, plan_for([source.device]))
    return path, [first, second]


@dataclass
class Drive:
    device: str
    partition: str
    image: Path


@pytest.fixture
def backup_drive(template: tuple[Path, list[Snapshot]], tmp_path: Path) -> Iterator[Drive]:
    """A USB backup drive: GPT, one ext4 partition "BACKUP" holding the repository."""
    with disk(tmp_path / "drive.img", [Part(1, "ext4", 600, "BACKUP")], 610) as device:
        with mounted(f"{device}p1", tmp_path / "fill") as root:
            sh("cp", "-a", template[0], root)
        yield Drive(device, f"{device}p1", tmp_path / "drive.img")


@pytest.fixture
def stick(tmp_path: Path) -> Iterator[Drive]:
    """A USB stick with one ext4 partition, to restore files onto."""
    with disk(tmp_path / "stick.img", [Part(1, "ext4", 40, "STICK")], 48) as device:
        yield Drive(device, f"{device}p1", tmp_path / "stick.img")


@pytest.fixture
def blank_disk(tmp_path: Path) -> Iterator[str]:
    """A disk the size of the source, full of old data and no partition table."""
    image = tmp_path / "blank.img"
    helpers.garbage_file(image, 140 * MiB)
    with helpers.attached(image) as device:
        try:
            yield device
        finally:
            unmount_all(device)
            subprocess.run(["partx", "--delete", device], check=False, capture_output=True)


@pytest.fixture
def make_app(ui_base: Path, tmp_path: Path) -> Callable[..., HourglassApp]:
    def make(**kwargs: Any) -> HourglassApp:
        options: dict[str, Any] = {
            "terminal": FULL,
            "language": "en",
            "scope": Scope(folders=(str(ui_base), str(tmp_path))),
            "probe": True,
            "watch_disks": False,
            "load_settings": False,
        }
        options.update(kwargs)
        return HourglassApp(**options)

    return make


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    """A tmux server of the test's own for the real `hourglass ui`; killed afterwards."""
    if not shutil.which("tmux"):
        pytest.skip("needs tmux")
    if not HOURGLASS.exists():
        pytest.skip(f"needs the installed command ({HOURGLASS})")
    t = Tmux(f"hourglass-test-{secrets.token_hex(4)}")
    try:
        yield t
    finally:
        subprocess.run(["tmux", "-L", t.socket, "kill-server"], capture_output=True)


async def settle(pilot: Pilot[Any], timeout: float = 60) -> None:
    """Wait until every worker has finished and the screen has caught up."""
    app = pilot.app
    deadline = time.monotonic() + timeout
    while True:
        await pilot.pause()
        busy = [w for w in app.workers if w.state in (WorkerState.PENDING, WorkerState.RUNNING)]
        if not busy:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"workers still running: {busy}")
        await asyncio.sleep(0.05)
    await pilot.pause()


async def wait_for(
    pilot: Pilot[Any], condition: Callable[[], bool], timeout: float = 60, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.05)


def screen_text(app: HourglassApp) -> str:
    """What the screen shows, as text (from Textual's own screenshot)."""
    import html
    import re

    svg = app.export_screenshot()
    rows: dict[str, list[str]] = {}
    for y, chunk in re.findall(r'<text[^>]*y="([\d.]+)"[^>]*>([^<]*)</text>', svg):
        rows.setdefault(y, []).append(html.unescape(chunk).replace("\xa0", " "))
    return "\n".join("".join(parts) for _, parts in sorted(rows.items(), key=lambda r: float(r[0])))


def shot(app: HourglassApp, name: str) -> None:
    """With ``HOURGLASS_TEST_SHOTS=DIR``, keep a picture of the screen (to look at)."""
    folder = SHOTS
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    svg = Path(folder) / f"{name}.svg"
    # Textual writes spaces as NBSP, which rsvg strips unless told to preserve them.
    svg.write_text(app.export_screenshot().replace("<svg ", '<svg xml:space="preserve" ', 1))
    if shutil.which("rsvg-convert"):
        subprocess.run(["rsvg-convert", str(svg), "-o", str(svg.with_suffix(".png"))], check=False)
