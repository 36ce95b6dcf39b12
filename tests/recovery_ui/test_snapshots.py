"""Snapshot tests of the main screens at 80x24 and 120x40, in English and Chinese, and on
the Linux console (pytest-textual-snapshot; `pytest --snapshot-update` rewrites them, after
a person has looked at the pictures: docs/APP.md says how).

What the screens show must not depend on the machine: the disks are fixed ``Disk`` records
(the engine's own model, as discovery would report a laptop's SSD and a USB backup drive),
the repository is a real one at a fixed path on a tmpfs, with snapshots whose ids and times
are fixed, and the time zone is UTC.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from imaging.disks.model import Disk, Partition
from imaging.disks.repos import FoundRepository
from imaging.jobs.disks import Scope
from imaging.repository import codec
from imaging.repository.records import ChunkIndex
from imaging.repository.store import Repository
from imaging.units import decimal_size, human_size
from recovery_ui.app import HourglassApp
from recovery_ui.console import Terminal
from tests.conftest import PASSPHRASE
from tests.recovery_ui.conftest import FULL, screen_text, settle
from tests.recovery_ui.flows import choose_option, type_text

# The screens show the path and the network namespace's interfaces: both are fixed, so
# this module's tests run on one worker (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("ui-snapshots")

DEMO = Path("/tmp/hourglass-ui-demo")
REPO = DEMO / "hourglass-backups"
GB = 1000**3
SIZES = [(80, 24), (120, 40)]
LANGUAGES = ["en", "zh_CN"]
LINUX = Terminal("linux", False, "snapshot tests")

SSD = Disk(
    device="/dev/nvme0n1",
    by_id="/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_Plus_500GB_S4EVNX0R123456",
    model="Samsung SSD 970 EVO Plus 500GB",
    serial="S4EVNX0R123456",
    size=500_107_862_016,
    logical_sector=512,
    physical_sector=512,
    transport="nvme",
    removable=False,
    rotational=False,
    table="gpt",
    partitions=(
        Partition(1, "/dev/nvme0n1p1", 1 << 20, 536_870_912, "", "EFI System", "EFI system",
                  fstype="vfat", label="ESP", used=33_554_432),
        Partition(2, "/dev/nvme0n1p2", 537_919_488, 16 << 20, "", "Microsoft reserved"),
        Partition(3, "/dev/nvme0n1p3", 554_696_704, 498_000_000_000, "", "Basic data",
                  fstype="ntfs", label="Windows", used=143_000_000_000),
        Partition(4, "/dev/nvme0n1p4", 498_554_696_704, 1_048_576_000, "", "Windows RE",
                  fstype="ntfs", label="Recovery", used=650_000_000),
    ),
    table_id="5a1e5a1e-0000-4000-8000-000000000001",
)  # fmt: skip
USB = Disk(
    device="/dev/sdb",
    by_id="/dev/disk/by-id/usb-WD_Elements_25A2_575831324133-0:0",
    model="WD Elements 25A2",
    serial="WX12A3456789",
    size=2_000_365_289_472,
    logical_sector=512,
    physical_sector=4096,
    transport="usb",
    removable=False,
    rotational=True,
    table="gpt",
    partitions=(
        Partition(1, "/dev/sdb1", 1 << 20, 2_000_363_192_320, "", "Linux filesystem", "",
                  fstype="ext4", label="BACKUP", used=412_000_000_000,
                  mountpoint=str(DEMO)),
    ),
    repositories=(str(REPO),),
    table_id="5a1e5a1e-0000-4000-8000-000000000002",
)  # fmt: skip
FOUND = [FoundRepository(str(REPO), "/dev/sdb", 1, mounted_by_us=False)]
# (id, time, kind): three backups of the SSD over a month, and one of a documents partition
SNAPSHOTS = [
    ("1a" * 16, "2026-10-25T18:02:11+00:00", "disk"),
    ("2b" * 16, "2026-11-15T09:30:45+00:00", "disk"),
    ("3c" * 16, "2026-11-22T10:31:05+00:00", "disk"),
    ("4d" * 16, "2026-11-22T10:40:27+00:00", "partition"),
]
LOG_LINES = [
    "2026-11-22 10:29:58 INFO    recovery_ui: Hourglass app started: terminal full, language en",
    "2026-11-22 10:30:01 INFO    recovery_ui: repository opened: /mnt/backup/hourglass-backups",
    "2026-11-22 10:30:02 INFO    recovery_ui: backup of /dev/nvme0n1 into /mnt/backup/repo",
    "2026-11-22 10:31:05 INFO    recovery_ui: snapshot 3c3c3c3c3c3c committed",
    "2026-11-22 10:31:40 INFO    recovery_ui: verify of 3c3c3c3c3c3c: ok",
]


def _images(kind: str) -> list[dict[str, Any]]:
    if kind == "partition":
        return [{"name": "data", "size": 16 << 20, "fstype": "ext4", "label": "Documents"}]
    images: list[dict[str, Any]] = [{"name": "head", "size": 1 << 20}]
    for p in SSD.partitions:
        image: dict[str, Any] = {"name": f"p{p.number}", "number": p.number, "size": p.size}
        if p.fstype:
            image |= {"fstype": p.fstype, "label": p.label, "used": p.used}
        images.append(image)
    return images


DOCUMENTS_TIME = 1_763_800_000
DOCUMENTS_UUID = "5b1c1a7e-6d0e-4a57-9c3e-0d0c0c1d0e0f"
DOCUMENTS = {
    "Letters/to the bank.odt": 18_432,
    "Letters/landlord.odt": 9_216,
    "Photos/2026-08 holiday/beach.jpg": 412_000,
    "Photos/2026-08 holiday/dinner.jpg": 388_500,
    "Taxes 2025.pdf": 96_300,
    "thesis.odt": 254_100,
}


def _documents_snapshot(repo: Repository, snapshot_id: str, when: str) -> None:
    """A real backup of a small ext4 filesystem with fixed files, given a fixed id and time."""
    import shutil

    from imaging.image.backup import run_backup
    from imaging.image.plan import plan_for

    tree = DEMO / "documents"
    for name, size in DOCUMENTS.items():
        path = tree / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(size))
        os.utime(path, (DOCUMENTS_TIME, DOCUMENTS_TIME))
    image = DEMO / "documents.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    # The same bytes every run, so what the statistics show is the same (a few bytes more
    # or less moved "2.5 kB" to "2.4 kB"): a fixed UUID, hash seed and clock, and every
    # inode's times set afterwards (mkfs copies each source file's ctime, which is now).
    fixed = {"E2FSPROGS_FAKE_TIME": str(DOCUMENTS_TIME)}
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "Documents", "-U", DOCUMENTS_UUID,
                    "-E", f"hash_seed={DOCUMENTS_UUID}", "-d", str(tree), str(image)],
                   check=True, env={**os.environ, **fixed})  # fmt: skip
    entries = {"/"} | {"/" + "/".join(Path(n).parts[:k]) for n in DOCUMENTS
                       for k in range(1, len(Path(n).parts) + 1)}  # fmt: skip
    commands = [f'sif "{entry}" {field} @{DOCUMENTS_TIME}' for entry in sorted(entries)
                for field in ("atime", "mtime", "ctime")]  # fmt: skip
    subprocess.run(["debugfs", "-w", "-f", "-", str(image)], input="\n".join(commands) + "\n",
                   text=True, capture_output=True, check=True, env={**os.environ, **fixed})  # fmt: skip
    made = run_backup(repo, plan_for([str(image)]))
    manifest = dict(made.manifest, id=snapshot_id, time=when, source="/dev/nvme0n1p5",
                    source_id="part:documents")  # fmt: skip
    shutil.move(repo.path / "indexes" / made.id, repo.path / "indexes" / snapshot_id)
    repo.commit_snapshot(manifest)
    repo.delete_snapshot(made.id)
    image.unlink()
    shutil.rmtree(tree)


def _build_demo_repository() -> None:
    """A real repository whose snapshots have fixed ids and times. The disk snapshots'
    indexes say every block is zero (enough for timelines and statistics, which read
    manifests and indexes); the documents snapshot is a real filesystem to browse."""
    repo = Repository.init(REPO, passphrase=PASSPHRASE)
    for snapshot_id, when, kind in SNAPSHOTS:
        if kind == "partition":
            _documents_snapshot(repo, snapshot_id, when)
            continue
        images = []
        for image in _images(kind):
            blocks = -(-int(image["size"]) // repo.block_size)
            ids = ChunkIndex(codec.ZERO_ID * blocks)
            mac = repo.write_index(snapshot_id, image["name"], ids, int(image["size"]))
            images.append({**image, "offset": 0, "blocks": blocks, "method": "raw",
                           "index_mac": mac})  # fmt: skip
        manifest: dict[str, Any] = {
            "version": 1,
            "id": snapshot_id,
            "time": when,
            "hostname": "hourglass",
            "source": "/dev/nvme0n1" if kind == "disk" else "/dev/nvme0n1p5",
            "source_id": "disk:S4EVNX0R123456" if kind == "disk" else "part:documents",
            "kind": kind,
            "size": SSD.size if kind == "disk" else 16 << 20,
            "parent": None,
            "images": images,
            "stats": {"stored": 0},
        }
        if kind == "disk":
            manifest["disk"] = {"model": SSD.model, "serial": SSD.serial}
        repo.commit_snapshot(manifest)


@pytest.fixture(scope="module")
def demo_repository() -> Iterator[Path]:
    """The demo repository on a tmpfs mounted at a fixed path (the app names a repository by
    its path inside its filesystem). Another test run on the machine waits for this one's
    turn (a lock next to it): two tmpfs mounts stacked at the path took each other's files."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a tmpfs at a fixed path)")
    with open(DEMO.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # let go when the file closes
        DEMO.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "hourglass-demo", str(DEMO)],
                       check=True)  # fmt: skip
        try:
            with pytest.MonkeyPatch.context() as mp:
                from imaging.repository import keys
                from tests.conftest import WEAK_KDF

                mp.setattr(keys, "PASSPHRASE_KDF", WEAK_KDF)
                _build_demo_repository()
            yield REPO
        finally:
            subprocess.run(["umount", str(DEMO)], check=False)


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def demo_app(language: str, terminal: Terminal = FULL) -> HourglassApp:
    return HourglassApp(
        terminal=terminal,
        language=language,
        scope=Scope(devices=("/dev/hourglass-no-such-disk",)),
        probe=False,
        watch_disks=False,
        load_settings=False,
    )


async def with_demo_disks(pilot: Pilot[Any]) -> None:
    """Let the app's own (empty) discovery finish, then show the demo disks."""
    await settle(pilot)
    app = pilot.app
    assert isinstance(app, HourglassApp)
    app.disks = [SSD, USB]
    app.found = FOUND
    app.disks_changed.publish(app)
    await settle(pilot)


async def open_demo_repository(pilot: Pilot[Any]) -> None:
    await settle(pilot)
    await choose_option(pilot, "where", "found-0")
    await settle(pilot)
    await type_text(pilot, PASSPHRASE)
    await pilot.press("enter")
    await settle(pilot)


def press_then(*keys: str, then: Callable[[Pilot[Any]], Awaitable[None]] | None = None) -> Any:
    async def run(pilot: Pilot[Any]) -> None:
        await with_demo_disks(pilot)
        await pilot.press(*keys)
        await settle(pilot)
        if then is not None:
            await then(pilot)

    return run


async def restore_system(pilot: Pilot[Any]) -> None:
    await press_then("2", then=open_demo_repository)(pilot)


async def restore_files(pilot: Pilot[Any]) -> None:
    await press_then("3", then=open_demo_repository)(pilot)
    await choose_option(pilot, "timeline", "4d" * 16)  # the documents: one filesystem
    await settle(pilot)


async def repository(pilot: Pilot[Any]) -> None:
    await press_then("4", then=open_demo_repository)(pilot)


async def confirm(pilot: Pilot[Any]) -> None:
    from recovery_ui import text
    from recovery_ui.i18n import _
    from recovery_ui.screens.confirm import TypedConfirmation

    await with_demo_disks(pilot)
    await pilot.app.push_screen(
        TypedConfirmation(
            _("Erase this disk and restore the backup onto it?"),
            [*text.erase_lines(SSD), "", _("It will then hold the backup of:"),
             "  2026-11-22 10:31:05  Samsung SSD 970 EVO Plus 500GB (S4EVNX0R123456)"],
            _("Everything now on {device} is lost.").format(device=SSD.device),
            "nvme0n1",
            _("Erase and restore"),
        )
    )  # fmt: skip
    await settle(pilot)


async def error(pilot: Pilot[Any]) -> None:
    from imaging.errors import TargetTooSmall

    await with_demo_disks(pilot)
    app = pilot.app
    assert isinstance(app, HourglassApp)
    app.report_error(
        TargetTooSmall(
            "/dev/sdc (250.1 GB, 250059350016 bytes) is too small for the snapshot's layout: "
            "that needs 500.1 GB (500107862016 bytes).",
            "partition 3, partition 4 would not fit. Choose a larger disk or restore single "
            "partitions (3c3c3c3c3c3c:N).",
        ),
        "snapshot test",
    )
    await settle(pilot)


async def logs(pilot: Pilot[Any]) -> None:
    await with_demo_disks(pilot)
    app = pilot.app
    assert isinstance(app, HourglassApp)
    app.session_log.lines.clear()
    app.session_log.lines.extend(LOG_LINES)
    await pilot.press("7")
    await settle(pilot)


# name -> (what to do before the picture, needs the demo repository)
SCREENS: dict[str, tuple[Callable[[Pilot[Any]], Awaitable[None]], bool]] = {
    "home": (with_demo_disks, False),
    "backup": (press_then("1"), False),
    "restore_system": (restore_system, True),
    "confirm": (confirm, False),
    "restore_files": (restore_files, True),
    "repository": (repository, True),
    "settings": (press_then("6"), False),
    "logs": (logs, False),
    "error": (error, False),
}
# The screens that need the demo repository need root (a tmpfs at a fixed path): integration.
SCREEN_PARAMS = [
    pytest.param(name, marks=[pytest.mark.integration, pytest.mark.root]) if needs else name
    for name, (_, needs) in SCREENS.items()
]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("screen", SCREEN_PARAMS)
def test_screen(
    screen: str,
    language: str,
    size: tuple[int, int],
    snap_compare: Any,
    request: pytest.FixtureRequest,
) -> None:
    run_before, needs_repository = SCREENS[screen]
    if needs_repository:
        request.getfixturevalue("demo_repository")
    assert snap_compare(demo_app(language), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("screen", ["home", "backup", "confirm", "error"])
def test_linux_console(screen: str, snap_compare: Any) -> None:
    """TERM=linux: ASCII-safe glyphs, solid borders, the 16 ANSI colours, English."""
    run_before, _ = SCREENS[screen]
    assert snap_compare(demo_app("zh_CN", LINUX), terminal_size=(80, 24), run_before=run_before)


SERIAL = Terminal("serial", False, "snapshot tests")
NETNS = "hourglass-snapshots"


@pytest.fixture(scope="module")
def demo_network() -> Iterator[str]:
    """Two wired interfaces in a namespace of our own: one with an address and a gateway,
    one without a cable."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a network namespace)")
    peers = f"{NETNS}-peers"
    for name in (NETNS, peers):
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    commands = [
        ["ip", "netns", "add", NETNS],
        ["ip", "netns", "add", peers],
        ["ip", "-n", NETNS, "link", "add", "enp3s0", "type", "veth", "peer", "name", "peer0"],
        ["ip", "-n", NETNS, "link", "add", "enp4s0", "type", "veth", "peer", "name", "peer1"],
        ["ip", "-n", NETNS, "link", "set", "peer0", "netns", peers],
        ["ip", "-n", NETNS, "link", "set", "peer1", "netns", peers],
        ["ip", "-n", peers, "link", "set", "peer0", "up"],
        ["ip", "-n", NETNS, "link", "set", "enp3s0", "up"],
        ["ip", "-n", NETNS, "address", "add", "192.168.1.20/24", "dev", "enp3s0"],
        ["ip", "-n", NETNS, "route", "add", "default", "via", "192.168.1.1"],
    ]
    try:
        for argv in commands:
            subprocess.run(argv, check=True, capture_output=True)
        yield NETNS
    finally:
        for name in (NETNS, peers):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.mark.integration
@pytest.mark.root
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("language", LANGUAGES)
def test_network_screen(
    language: str, size: tuple[int, int], snap_compare: Any, demo_network: str
) -> None:
    app = demo_app(language)
    app.netns = demo_network
    assert snap_compare(app, terminal_size=size, run_before=press_then("5"))


@pytest.mark.parametrize("screen", SCREEN_PARAMS)
async def test_serial_console_draws_only_ascii(screen: str, request: pytest.FixtureRequest) -> None:
    """On a serial line nobody knows what the other end can draw: every cell is ASCII."""
    from tests.recovery_ui.conftest import screen_text

    run_before, needs_repository = SCREENS[screen]
    if needs_repository:
        request.getfixturevalue("demo_repository")
    app = demo_app("zh_CN", SERIAL)
    async with app.run_test(size=(80, 24)) as pilot:
        await run_before(pilot)
        shown = screen_text(app)
    strange = sorted({c for c in shown if ord(c) > 126})
    assert not strange, f"{screen}: {strange}"
    assert "Hourglass" in shown


def _rows(widget: Any, count: int) -> list[str]:
    """The first ``count`` rows a widget draws, as plain text: what a monochrome terminal
    shows of them (no colour, no reverse video)."""
    return ["".join(segment.text for segment in widget.render_line(y)) for y in range(count)]


async def test_serial_console_shows_focus_without_colour() -> None:
    """The serial console may be monochrome: the focused list row has a mark before it, the
    focused button brackets around it, and only the focused widget shows either."""
    app = demo_app("en", SERIAL)
    async with app.run_test(size=(80, 24)) as pilot:
        await with_demo_disks(pilot)
        menu = _rows(app.screen.query_one("#menu"), 3)
        assert menu[0].startswith("> 1 ") and menu[1].startswith("  2 "), menu
        await pilot.press("1")
        await settle(pilot)
        screen = app.screen
        disks, parts = screen.query_one("#disks"), screen.query_one("#parts")
        next_button = screen.query_one("#source-next")
        assert app.focused is disks
        assert _rows(disks, 1)[0].startswith(f"> {SSD.device}"), _rows(disks, 1)
        assert not any(row.startswith(">") for row in _rows(parts, 4)), _rows(parts, 4)
        assert str(next_button.render()).strip() == "Next"
        await pilot.press("tab")
        await settle(pilot)
        assert app.focused is parts
        assert _rows(disks, 1)[0].startswith(f"  {SSD.device}"), _rows(disks, 1)
        rows = _rows(parts, 2)
        assert rows[0].startswith("> [X] 1 ") and rows[1].startswith("  [X] 2 "), rows
        await pilot.press("tab")
        await settle(pilot)
        assert app.focused is next_button
        assert str(next_button.render()) == "[Next]"
        assert not any(row.startswith(">") for row in _rows(parts, 4) + _rows(disks, 4))


# --- the figures each screen shows ----------------------------------------------------------
# The pictures above catch any change; these say which figures must be right, worked out from
# the fixtures and the engine rather than from the pictures, so a regenerated picture with a
# wrong figure fails here.


def _disk_figures(*disks: Disk) -> list[str]:
    figures = []
    for disk in disks:
        figures += [disk.device, disk.serial, decimal_size(disk.size)]
        for p in disk.partitions:
            figures.append(decimal_size(p.size))
            if p.used is not None and p.fstype:
                figures.append(human_size(p.used))  # "133.2 GiB used", "已用 133.2 GiB"
    return figures


def _repository_figures() -> list[str]:
    from imaging.repository.stats import collect

    info = collect(Repository.open(REPO, PASSPHRASE))
    assert info.snapshots == len(SNAPSHOTS)
    return [
        str(REPO),
        decimal_size(info.logical_bytes),
        decimal_size(info.data_bytes),
        decimal_size(info.stored_bytes),
    ]


def _figures(screen: str) -> list[str]:
    """What ``screen`` must show, in any language."""
    if screen == "repository":
        return _repository_figures()
    disk_times = [when[11:19] for _, when, kind in SNAPSHOTS if kind == "disk"]
    return {
        "home": [*_disk_figures(SSD, USB), str(REPO)],
        "backup": [*_disk_figures(SSD), USB.device, USB.serial, decimal_size(USB.size)],
        "restore_system": [*disk_times, SSD.model, decimal_size(SSD.size),
                           *_disk_figures(SSD)[3:]],
        "confirm": [*_disk_figures(SSD), "2026-11-22 10:31:05", "nvme0n1"],
        "restore_files": ["2026-11-22 10:40:27", "Letters/", "Photos/",
                          f"Taxes 2025.pdf ({human_size(DOCUMENTS['Taxes 2025.pdf'])})",
                          f"thesis.odt ({human_size(DOCUMENTS['thesis.odt'])})"],
        "settings": ["English", "简体中文"],
        "logs": LOG_LINES,
        "error": ["/dev/sdc", "250.1 GB", "500.1 GB"],
    }[screen]  # fmt: skip


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("screen", SCREEN_PARAMS)
async def test_screen_figures(screen: str, language: str, request: pytest.FixtureRequest) -> None:
    from tests.recovery_ui.conftest import screen_text

    run_before, needs_repository = SCREENS[screen]
    if needs_repository:
        request.getfixturevalue("demo_repository")
    app = demo_app(language)
    async with app.run_test(size=(120, 40)) as pilot:
        await run_before(pilot)
        shown = screen_text(app)
        figures = _figures(screen)  # the repository's are read while it is mounted
    missing = [figure for figure in figures if figure not in shown]
    assert not missing, f"{screen} ({language}) lacks {missing}:\n{shown}"


@pytest.mark.integration
@pytest.mark.root
@pytest.mark.parametrize("language", LANGUAGES)
async def test_repository_screen_figures(language: str, demo_repository: Path) -> None:
    """Line by line, the statistics are the engine's figures for the demo repository. Its
    data has no repeated block (the disk snapshots are all zeros): the screen says so, and
    never calls a factor of 1.0 a saving ("1.0x less", as every picture once read)."""
    from imaging.repository.stats import collect
    from recovery_ui.widgets.controls import Static

    info = collect(Repository.open(demo_repository, PASSPHRASE))
    assert info.data_bytes == info.unique_bytes > 0
    app = demo_app(language)
    async with app.run_test(size=(120, 40)) as pilot:
        await repository(pilot)
        lines = str(app.screen.query_one("#stats-text", Static).content).splitlines()
    assert len(lines) == 8, lines
    _where, folder, keys, backups, size, data, unique, stored = lines
    assert folder.endswith(str(demo_repository))
    assert "AES-256" in keys and f"{info.key_slots}" in keys
    assert re.findall(r"\d+", backups) == [f"{info.snapshots}", f"{info.sources}"], backups
    assert size.endswith(decimal_size(info.logical_bytes)), size
    assert data.endswith(decimal_size(info.data_bytes)), data
    no_repeat = {"en": ", no block repeats", "zh_CN": "，没有重复的块"}[language]
    assert unique.endswith(decimal_size(info.unique_bytes) + no_repeat), unique
    assert "1.0x" not in unique and "1/1.0" not in unique
    assert decimal_size(info.stored_bytes) in stored, stored
    assert re.findall(r"\d+", stored.replace(decimal_size(info.stored_bytes), "")) == [
        f"{info.chunks}"
    ], stored


@pytest.mark.integration
@pytest.mark.root
@pytest.mark.parametrize(("size", "all_shown"), [((80, 24), False), ((120, 40), True)])
async def test_restore_disk_list_uses_the_rows_it_has(
    size: tuple[int, int], all_shown: bool, demo_repository: Path
) -> None:
    """Seven disks, two or three rows each: at 80x24 the list keeps its 8 rows and scrolls;
    at 120x40 all of them show (it was 8 rows there too: 4 disks of 6 above empty rows)."""
    from dataclasses import replace

    from textual.widgets import OptionList

    app = demo_app("en")
    async with app.run_test(size=size) as pilot:
        await restore_system(pilot)
        more = [
            replace(SSD, device=f"/dev/sd{c}", serial=f"S{c}", by_id=f"x-{c}", partitions=())
            for c in "cdefg"
        ]
        app.disks = [SSD, *more, USB]
        app.disks_changed.publish(app)
        await settle(pilot)
        await pilot.click("#when-next")
        await settle(pilot)
        targets = app.screen.query_one("#targets", OptionList)
        assert targets.option_count == 7
        if all_shown:
            assert targets.max_scroll_y == 0 and targets.size.height > 8, targets.size
        else:
            assert targets.size.height == 8 and targets.max_scroll_y > 0, targets.size
        shown = screen_text(app)
    assert ("/dev/sdg" in shown) == all_shown, shown
