"""The agent on real filesystems (ext4, xfs, btrfs on loop devices), with fanotify."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from imaging.agent.config import AgentConfig
from imaging.jobs.agent import run_agent
from imaging.journal.records import Entry
from imaging.journal.restore import journal_versions, restore_at
from imaging.journal.segments import load_segments, ordered_events, replay
from imaging.repository.store import Repository

pytestmark = [pytest.mark.integration, pytest.mark.root]
ROOT = Path(__file__).resolve().parents[3]


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(params=["ext4", "xfs", "btrfs"])
def fs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    kind = request.param
    mkfs = {
        "ext4": ["mkfs.ext4", "-q", "-F"],
        "xfs": ["mkfs.xfs", "-q", "-f"],
        "btrfs": ["mkfs.btrfs", "-q", "-f"],
    }[kind]
    if shutil.which(mkfs[0]) is None:
        pytest.skip(f"{mkfs[0]} is not installed")
    image = tmp_path / f"{kind}.img"
    with open(image, "wb") as f:
        f.truncate(512 << 20)
    _sh(*mkfs, str(image))
    loop = _sh("losetup", "--show", "--find", str(image))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        _sh("mount", loop, str(mnt))
        try:
            yield mnt
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


def _config(tmp_path: Path, protect: Path, **extra: float) -> AgentConfig:
    return AgentConfig(
        location=str(tmp_path / "repo"),
        passphrase_file=None,
        paths=(str(protect),),
        exclude=("*.tmp",),
        interval=extra.get("interval", 1.0),
        commit_interval=0.3,
        settle=0.1,
        state_dir=str(tmp_path / "state"),
    )


def _state(repo_dir: Path) -> dict[str, Entry]:
    repo = Repository.open(repo_dir)
    return replay(ordered_events(load_segments(repo)))


def _mtime(repo_dir: Path, path: Path) -> int | None:
    entry = _state(repo_dir).get(str(path))
    return entry.meta.mtime_ns if entry is not None else None


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _next_second() -> None:
    time.sleep(1.05 - (time.time() % 1))


class _Running:
    def __init__(self, config: AgentConfig) -> None:
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(
            target=run_agent, args=(config,), kwargs={"stop": self.stop, "on_ready": self.ready.set}
        )

    def __enter__(self) -> _Running:
        self.thread.start()
        assert self.ready.wait(30), "the agent did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def test_versions_restore_at_renames_deletes(fs: Path, tmp_path: Path) -> None:
    """Versions are committed within 5 s of the close; restore --at picks the version of
    each second; renames and deletes are replayed; excluded files are not recorded."""
    Repository.init(tmp_path / "repo", encryption="none")
    repo_dir = tmp_path / "repo"
    docs = fs / "docs"
    docs.mkdir()
    (docs / "gone.txt").write_text("to be deleted")
    with _Running(_config(tmp_path, fs)):
        assert "gone.txt" in str(list(_state(repo_dir)))  # the first rescan
        _next_second()
        (docs / "a.txt").write_text("version one")
        os.setxattr(docs / "a.txt", "user.note", b"kept")
        assert _wait(lambda: str(docs / "a.txt") in _state(repo_dir), 5.0)
        t1 = datetime.fromtimestamp(time.time()).astimezone()
        _next_second()
        _next_second()
        (docs / "a.txt").write_text("version two, longer")
        (docs / "skip.tmp").write_text("excluded")
        assert _wait(lambda: _state(repo_dir)[str(docs / "a.txt")].meta.size == 19, 5.0)
        t2 = datetime.fromtimestamp(time.time()).astimezone()
        _next_second()
        os.rename(docs / "a.txt", docs / "b.txt")
        (docs / "gone.txt").unlink()
        assert _wait(
            lambda: (
                str(docs / "b.txt") in _state(repo_dir)
                and str(docs / "gone.txt") not in _state(repo_dir)
            ),
            5.0,
        )
        t3 = datetime.fromtimestamp(time.time()).astimezone()
    repo = Repository.open(repo_dir)
    state = _state(repo_dir)
    assert str(docs / "a.txt") not in state
    assert str(docs / "skip.tmp") not in state
    kinds = [v.event.type for v in journal_versions(repo, str(docs / "a.txt"))]
    assert kinds.count("write") == 2 and "rename" in kinds
    out1, out2, out3 = tmp_path / "o1", tmp_path / "o2", tmp_path / "o3"
    restore_at(repo, [str(docs)], t1, str(out1))
    assert (out1 / "docs" / "a.txt").read_text() == "version one"
    assert os.getxattr(out1 / "docs" / "a.txt", "user.note") == b"kept"
    assert (out1 / "docs" / "gone.txt").read_text() == "to be deleted"
    # At the second boundary: the second before the second version's is the first version.
    second = [v for v in journal_versions(repo, str(docs / "a.txt")) if v.event.type == "write"][1]
    edge = datetime.fromtimestamp(second.event.ns // 10**9).astimezone()
    restore_at(repo, [str(docs / "a.txt")], edge, str(tmp_path / "e2"))
    assert (tmp_path / "e2" / "a.txt").read_text() == "version two, longer"
    restore_at(repo, [str(docs / "a.txt")], edge - timedelta(seconds=1), str(tmp_path / "e1"))
    assert (tmp_path / "e1" / "a.txt").read_text() == "version one"
    restore_at(repo, [str(docs)], t2, str(out2))
    assert (out2 / "docs" / "a.txt").read_text() == "version two, longer"
    restore_at(repo, [str(docs)], t3, str(out3))
    assert (out3 / "docs" / "b.txt").read_text() == "version two, longer"
    assert not (out3 / "docs" / "a.txt").exists()
    assert not (out3 / "docs" / "gone.txt").exists()


@pytest.mark.parametrize("fs", ["ext4"], indirect=True)
def test_repository_unreachable_keeps_the_queue(fs: Path, tmp_path: Path) -> None:
    """While the repository is gone the changes wait (status says so); once it is back they
    are committed, inside a recorded gap."""
    Repository.init(tmp_path / "repo", encryption="none")
    repo_dir, away = tmp_path / "repo", tmp_path / "away"
    config = _config(tmp_path, fs)
    with _Running(config):
        repo_dir.rename(away)
        (fs / "while-away.txt").write_text("written while the drive was gone")
        status = tmp_path / "state" / "status.json"
        assert _wait(lambda: '"queue": 0' not in status.read_text(), 5.0)
        assert '"last_error": null' not in status.read_text()
        away.rename(repo_dir)
        assert _wait(lambda: str(fs / "while-away.txt") in _state(repo_dir), 10.0)
        assert _wait(lambda: '"queue": 0' in status.read_text(), 5.0)
    repo = Repository.open(repo_dir)
    gaps = [v.event for v in journal_versions(repo, str(fs)) if v.event.type == "gap"]
    assert [g.reason for g in gaps] == ["unreachable"]
    out = tmp_path / "out"
    restore_at(repo, [str(fs / "while-away.txt")], datetime.now().astimezone(), str(out))
    assert (out / "while-away.txt").read_text() == "written while the drive was gone"


@pytest.mark.parametrize("fs", ["ext4"], indirect=True)
def test_a_file_written_continuously_gets_one_version_per_interval(
    fs: Path, tmp_path: Path
) -> None:
    """Closed 30 times in 3 s with a 1 s interval: at most one version a second (plus the
    first), and the last content is the last version."""
    Repository.init(tmp_path / "repo", encryption="none")
    repo_dir = tmp_path / "repo"
    log = fs / "log.txt"
    with _Running(_config(tmp_path, fs, interval=1.0)):
        started = time.monotonic()
        for i in range(30):
            log.write_text(f"line {i}\n")
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        stopped = time.time_ns()
        last = log.stat().st_mtime_ns
        assert _wait(lambda: _mtime(repo_dir, log) == last, 5.0)
    repo = Repository.open(repo_dir)
    writes = [v for v in journal_versions(repo, str(log)) if v.event.type == "write"]
    assert 2 <= len(writes) <= int(elapsed) + 2
    # Copied while it was being written, not only once the writes stopped.
    assert sum(w.event.ns < stopped for w in writes) >= 2
    out = tmp_path / "out"
    restore_at(repo, [str(log)], datetime.now().astimezone(), str(out))
    assert (out / "log.txt").read_text() == "line 29\n"


def _agent_process(config_file: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "imaging.cli.main", "agent", "--config", str(config_file)],
        env=env,
    )


def _write_config(tmp_path: Path, protect: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[repository]\nlocation = "{tmp_path / "repo"}"\n'
        f'[protect]\npaths = ["{protect}"]\ninterval = 1\ncommit_interval = 0.3\n'
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n'
        '[images]\nschedule = "daily"\n[offsite]\nto = []\nwindow = "22:00-06:00"\n'
    )
    return path


@pytest.mark.slow
@pytest.mark.parametrize("fs", ["ext4"], indirect=True)
def test_overflow_and_kill(fs: Path, tmp_path: Path) -> None:
    """A stopped agent whose queue overflows records a gap and loses no file; one killed and
    restarted records a gap and loses nothing either; `agent status` tells."""
    Repository.init(tmp_path / "repo", encryption="none")
    repo_dir = tmp_path / "repo"
    config = _write_config(tmp_path, fs)
    agent = _agent_process(config)
    try:
        assert _wait((tmp_path / "state" / "status.json").exists, 30)
        agent.send_signal(signal.SIGSTOP)
        burst = fs / "burst"
        burst.mkdir()
        for i in range(20000):  # above the kernel's queue of 16384 events
            (burst / f"f{i}").write_bytes(b"%d" % i)
        agent.send_signal(signal.SIGCONT)

        def overflow_gap() -> bool:
            repo = Repository.open(repo_dir)
            events = [v.event for v in journal_versions(repo, str(burst))]
            return any(e.type == "gap" and e.reason == "overflow" for e in events)

        # The gap may be committed after the files (read before the overflow was reached).
        assert _wait(overflow_gap, 90)
        assert len([p for p in _state(repo_dir) if "/burst/" in p]) == 20000
        (fs / "before-kill").write_text("written, then the agent is killed at once")
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        (fs / "while-down").write_text("written while no agent ran")
        agent = _agent_process(config)
        assert _wait(
            lambda: {str(fs / "before-kill"), str(fs / "while-down")} <= set(_state(repo_dir)),
            30,
        )
        repo = Repository.open(repo_dir)
        gaps = [v.event for v in journal_versions(repo, str(fs)) if v.event.type == "gap"]
        assert any(g.reason == "not running" for g in gaps)
        status = subprocess.run(
            [sys.executable, "-m", "imaging.cli.main", "agent", "status", "--config", str(config)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "Agent: running" in status and str(fs) in status
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)


@pytest.mark.parametrize("fs", ["ext4"], indirect=True)
def test_edit_in_large_file_stores_about_the_edit(fs: Path, tmp_path: Path) -> None:
    """A 1 MiB edit in the middle of a 128 MiB file stores about 1 MiB of new chunks."""
    Repository.init(tmp_path / "repo", encryption="none")
    big = fs / "big.bin"
    with open(big, "wb") as f:
        for _ in range(128):
            f.write(os.urandom(1 << 20))
    config = _config(tmp_path, fs)
    run_agent(config, once=True)
    with open(big, "r+b") as f:
        f.seek(64 << 20)
        f.write(os.urandom(1 << 20))
    run_agent(config, once=True)
    repo = Repository.open(tmp_path / "repo")
    segments = load_segments(repo)
    writes = [e for s in segments for e in s.events if e.type == "write"]
    assert [e.meta.size for e in writes] == [128 << 20, 128 << 20]  # type: ignore[union-attr]
    new = writes[-1].new
    print(f"new chunk bytes for a 1 MiB edit in 128 MiB: {new}")
    assert (1 << 20) <= new <= (1 << 20) + 4 * 256 * 1024
    out = tmp_path / "out"
    restore_at(repo, [str(big)], datetime.now().astimezone(), str(out))
    assert (out / "big.bin").read_bytes() == big.read_bytes()
