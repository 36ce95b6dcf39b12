"""The agent's off-site copies (``[offsite]``): a pass inside the window copies journal
segments and disk images to a local target (made by the copy) and to an S3 target on the
suite's radosgw, and the targets restore; outside the window nothing is copied and the
status says when it opens; an unreachable target leaves the journal working and is copied
to once it is back; compaction leaves the target restorable; bad values are refused at
load; the bandwidth limit of the config is the one the copy keeps to."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from imaging.agent.config import load_config
from imaging.image.backup import backup_path
from imaging.jobs.agent import run_agent
from imaging.journal.segments import is_journal, load_segments, ordered_events, replay
from imaging.repository.storage import Kind
from imaging.repository.store import Repository
from imaging.repository.throttle import Direction, ThrottledStore
from tests.conftest import PASSPHRASE
from tests.s3server import S3Server
from tests.support import (
    hourglass_subprocess,
    loop_device,
    mounted,
    run_cli,
    sh,
    write_random_image,
)

STAMP = "%Y-%m-%d %H:%M:%S"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Path]:
    """A protected ext4 filesystem on a loop device."""
    image = tmp_path / "ext4.img"
    with open(image, "wb") as f:
        f.truncate(128 << 20)
    sh("mkfs.ext4", "-q", "-F", image)
    with loop_device(image) as device, mounted(device, tmp_path / "mnt") as mnt:
        yield mnt


def _window(open_now: bool) -> str:
    """A window of local time that holds now (an hour either side), or opens in 2 hours."""
    now = datetime.now()
    start, end = (now - timedelta(hours=1), now + timedelta(hours=1))
    if not open_now:
        start, end = now + timedelta(hours=2), now + timedelta(hours=3)
    return f"{start:%H:%M}-{end:%H:%M}"


def _config(
    tmp_path: Path,
    protect: Path,
    offsite: str,
    *,
    name: str = "agent.toml",
    commit_interval: float = 0.3,
    **agent: float,
) -> Path:
    path = tmp_path / name
    extra = "".join(f"{k} = {v}\n" for k, v in agent.items())
    path.write_text(
        f'[repository]\nlocation = "{tmp_path / "repo"}"\n'
        f'passphrase_file = "{tmp_path / "secret"}"\n'
        f'[protect]\npaths = ["{protect}"]\ninterval = 1\nsettle = 0.1\n'
        f"commit_interval = {commit_interval}\n"
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n{extra}'
        f"[offsite]\n{offsite}"
    )
    return path


def _repository(tmp_path: Path) -> Repository:
    (tmp_path / "secret").write_text(PASSPHRASE + "\n")
    return Repository.init(tmp_path / "repo", passphrase=PASSPHRASE)


def _status(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert run_cli("agent", "status", "--config", str(config), "--json") == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def _restore(repo: str, path: Path, out: Path, *extra: str, when: datetime | None = None) -> bytes:
    """``files restore --at`` from ``repo``: the bytes of ``path`` as of ``when`` (now)."""
    at = (when or datetime.now()).strftime(STAMP)
    argv = ["files", "restore", "--repo", repo, *extra, "--at", at, str(path), "--to", str(out)]
    assert run_cli(*argv, "--passphrase-file", str(out.parent / "secret")) == 0
    return (out / path.name).read_bytes()


def _next_second() -> None:
    time.sleep(1.05 - (time.time() % 1))


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


@pytest.mark.integration
@pytest.mark.root
def test_a_pass_in_the_window_copies_and_the_target_restores(
    ext4: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`agent --once` in the window: the target is made, it gets the journal and the disk
    image, `files restore --at` from it gives the file's bytes; after a compaction on the
    source the next pass leaves the target with the merged segment alone, and it restores
    every second as before."""
    repo = _repository(tmp_path)
    disk = tmp_path / "disk.img"
    write_random_image(disk, 8 << 20)
    backup_path(repo, disk)
    target = tmp_path / "offsite"
    config = _config(tmp_path, ext4, f'to = ["{target}"]\nwindow = "{_window(True)}"\n')
    (ext4 / "notes.txt").write_text("first version")
    assert run_cli("agent", "--config", str(config), "--once") == 0
    first = datetime.now()
    _next_second()
    (ext4 / "notes.txt").write_text("second version, longer")
    payload = os.urandom(300_000)
    (ext4 / "photo.bin").write_bytes(payload)
    assert run_cli("agent", "--config", str(config), "--once") == 0
    second = datetime.now()

    mirror = Repository.open(target, PASSPHRASE)
    assert mirror.snapshot_ids() == repo.snapshot_ids()  # the image and both segments
    assert sum(not is_journal(s) for s in mirror.snapshots()) == 1
    assert _restore(str(target), ext4 / "photo.bin", tmp_path / "o1") == payload
    notes = ext4 / "notes.txt"
    assert _restore(str(target), notes, tmp_path / "o2", when=first) == b"first version"
    assert _restore(str(target), notes, tmp_path / "o3", when=second) == b"second version, longer"
    (status,) = _status(config, capsys)["offsite"]  # type: ignore[misc]
    assert status["target"] == str(target) and status["behind"] == 0
    assert status["last_error"] is None and status["next_window"] is None
    assert isinstance(status["last_success"], float) and len(status["copied"]) == 1

    # Compaction merges the two segments on the source (and deletes them); the pass after
    # copies the merged one and deletes, on the target, the two it holds.
    offsite = f'to = ["{target}"]\nwindow = "{_window(True)}"\n'
    compacting = _config(tmp_path, ext4, offsite, name="compacting.toml", compact_after=0)
    assert run_cli("agent", "--config", str(compacting), "--once") == 0
    (merged,) = [s.id for s in repo.snapshots() if is_journal(s)]
    assert run_cli("agent", "--config", str(config), "--once") == 0
    mirrored = [s.id for s in Repository.open(target, PASSPHRASE).snapshots() if is_journal(s)]
    assert len(mirrored) == 2 and merged in mirrored  # the merged one and the last pass's
    segments = load_segments(Repository.open(target, PASSPHRASE))
    source = load_segments(Repository.open(tmp_path / "repo", PASSPHRASE))
    assert [s.snapshot.id for s in segments] == [s.snapshot.id for s in source]
    assert replay(ordered_events(segments)) == replay(ordered_events(source))
    assert _restore(str(target), notes, tmp_path / "o4", when=first) == b"first version"
    assert _restore(str(target), notes, tmp_path / "o5", when=second) == b"second version, longer"
    assert (
        run_cli("verify", "--repo", str(target), "--passphrase-file", str(tmp_path / "secret")) == 0
    )


@pytest.mark.integration
@pytest.mark.root
def test_outside_the_window_nothing_is_copied(
    ext4: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pass outside the window commits the journal, copies nothing, and the status says
    when the window opens."""
    _repository(tmp_path)
    target = tmp_path / "offsite"
    window = _window(False)
    config = _config(tmp_path, ext4, f'to = ["{target}"]\nwindow = "{window}"\n')
    (ext4 / "notes.txt").write_text("kept locally tonight")
    assert run_cli("agent", "--config", str(config), "--once") == 0
    assert not target.exists()
    assert _restore(str(tmp_path / "repo"), ext4 / "notes.txt", tmp_path / "o") == (
        b"kept locally tonight"
    )
    (status,) = _status(config, capsys)["offsite"]  # type: ignore[misc]
    opens = load_config(str(config)).offsite.window.opens(datetime.now())  # type: ignore[union-attr]
    assert status["next_window"] == opens.isoformat(timespec="seconds")
    assert status["copied"] == [] and status["last_success"] is None
    assert run_cli("agent", "status", "--config", str(config)) == 0
    out = capsys.readouterr().out
    assert f"Window opens: {opens.strftime(STAMP)}" in out and str(target) in out


@pytest.mark.integration
@pytest.mark.root
def test_sigterm_commits_the_journal_and_stops_the_copy_after_what_is_durable(
    ext4: Path, tmp_path: Path
) -> None:
    """SIGTERM while a disk image is being copied: the pending event is committed, the agent
    exits 0, the target lists only what it holds whole (the journal, not the image), and the
    next pass sends the rest."""
    repo = Repository.init(tmp_path / "repo", encryption="none")  # no key derivation
    (tmp_path / "secret").write_text("unused\n")
    disk = tmp_path / "disk.img"
    write_random_image(disk, 32 << 20, zero_every=0)
    image = backup_path(repo, disk).id
    target = tmp_path / "offsite"
    slow = _config(
        tmp_path, ext4, f'to = ["{target}"]\nbwlimit = "2M"\n', name="slow.toml", commit_interval=60
    )
    status_file = tmp_path / "state" / "status.json"
    agent = hourglass_subprocess("agent", "--config", str(slow), env={"PYTHONPATH": str(ROOT)})
    try:

        def status() -> dict[str, Any]:
            return json.loads(status_file.read_text())  # type: ignore[no-any-return]

        # The segments are copied first: with one on the target, the image is on its way.
        assert _wait(lambda: status_file.exists() and status()["offsite"][0]["copying"], 60)
        assert _wait(lambda: any((target / "snapshots").glob("*")), 60)
        (ext4 / "last.txt").write_text("saved just before the stop")
        assert _wait(lambda: status()["queue"] >= 1, 10)
        assert status()["offsite"][0]["copying"]
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    state = replay(ordered_events(load_segments(Repository.open(tmp_path / "repo"))))
    assert str(ext4 / "last.txt") in state
    mirror = Repository.open(target)
    assert image not in mirror.snapshot_ids()
    assert any(is_journal(s) for s in mirror.snapshots())  # segments go first
    assert len(_chunk_files(target)) < 32  # not all of it was sent
    assert run_cli("verify", "--repo", str(target)) == 0
    quick = _config(tmp_path, ext4, f'to = ["{target}"]\n', name="quick.toml")
    assert run_cli("agent", "--config", str(quick), "--once") == 0
    assert set(Repository.open(target).snapshot_ids()) == set(repo.snapshot_ids())
    assert run_cli("verify", "--repo", str(target), "--read-data") == 0


def _chunk_files(repo: Path) -> list[Path]:
    return [p for p in (repo / "chunks").rglob("*") if p.is_file()]


class _Proxy:
    """A TCP port that forwards to the object store while it is open: closed, the target is
    unreachable (connection refused) and the journal must not notice."""

    def __init__(self, to: tuple[str, int]) -> None:
        self.to = to
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.server: socket.socket | None = None

    def open(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self.server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.to)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(1 << 16):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.mark.integration
@pytest.mark.root
@pytest.mark.s3
def test_an_unreachable_target_is_copied_to_once_it_is_back(
    ext4: Path,
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The running agent with an S3 target behind a closed port: files are journaled all
    the same, the status names the target's error; once the port answers, the next try
    copies, and `files restore --at` from the bucket gives the file's bytes."""
    _repository(tmp_path)
    host, _, port = s3_server.endpoint.removeprefix("http://").partition(":")
    proxy = _Proxy((host, int(port)))
    credentials = tmp_path / "s3-credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {s3_server.access_key}\n"
        f"aws_secret_access_key = {s3_server.secret_key}\n"
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)  # the agent reaches the bucket by its config alone
    remote = f"s3://{s3_bucket}/offsite"
    endpoint = f"http://127.0.0.1:{proxy.port}"
    config = _config(
        tmp_path,
        ext4,
        f'to = [{{ location = "{remote}", endpoint = "{endpoint}", '
        f'credentials = "{credentials}" }}]\nevery = 1\nretry = 0.5\n',
    )
    status_file = tmp_path / "state" / "status.json"

    def status() -> dict[str, object]:
        return json.loads(status_file.read_text())  # type: ignore[no-any-return]

    def target() -> dict[str, object]:
        return status()["offsite"][0]  # type: ignore[index, no-any-return]

    stop = threading.Event()
    ready = threading.Event()
    agent = threading.Thread(
        target=run_agent,
        args=(load_config(str(config)),),
        kwargs={"stop": stop, "on_ready": ready.set},
    )
    agent.start()
    try:
        assert ready.wait(30)
        assert _wait(lambda: target()["last_error"] is not None, 60)
        assert "Cannot reach the object store" in str(target()["last_error"])
        (ext4 / "while-away.txt").write_text("journaled while the target was away")
        repo = Repository.open(tmp_path / "repo", PASSPHRASE)

        def journaled() -> bool:
            state = replay(ordered_events(load_segments(repo)))
            return str(ext4 / "while-away.txt") in state and status()["queue"] == 0

        assert _wait(journaled, 10)
        assert status()["last_error"] is None  # the journal's own: nothing went wrong there
        assert target()["last_success"] is None
        proxy.open()
        assert _wait(lambda: target()["behind"] == 0 and target()["last_error"] is None, 90)
    finally:
        stop.set()
        agent.join(60)
        proxy.close()
    assert not agent.is_alive()
    reach = ["--s3-endpoint", s3_server.endpoint, "--credentials", str(credentials)]
    got = _restore(remote, ext4 / "while-away.txt", tmp_path / "o", *reach)
    assert got == b"journaled while the target was away"
    assert isinstance(target()["last_success"], float)


@pytest.mark.integration
@pytest.mark.root
def test_the_bwlimit_of_the_config_is_the_copy_s(ext4: Path, tmp_path: Path) -> None:
    """The limiter is built from [offsite] bwlimit, the target's store keeps to it, and the
    copy's uploads are charged to it (not a timed assertion)."""
    _repository(tmp_path)
    target = tmp_path / "offsite"
    config = _config(tmp_path, ext4, f'to = ["{target}"]\nbwlimit = "08:00,200M 20:00,100M"\n')
    (ext4 / "big.bin").write_bytes(os.urandom(2 << 20))
    agent = run_agent(load_config(str(config)), once=True)
    offsite = agent.offsite
    assert offsite is not None and offsite.limiter is not None
    assert offsite.limiter.timetable.text == "08:00,200M 20:00,100M"
    store = offsite.store(offsite.targets[0].target)
    assert isinstance(store, ThrottledStore) and store.limiter is offsite.limiter
    # The limiter records, per direction, until when the bytes charged to it are paid for:
    # the copy's uploads were charged.
    assert Direction.UP in offsite.limiter._paid
    sent = sum(1 for _ in Repository.open(target, PASSPHRASE).store.list(Kind.CHUNKS))
    assert sent > 0 and offsite.targets[0].bytes_sent > (2 << 20)


BAD = [
    ('to = ["ftp://host/repo"]', "entry 1: ftp://host/repo: Hourglass does not know ftp://"),
    ('to = ["relative/repo"]', "entry 1: relative/repo is not an absolute path"),
    ('to = ["s3://A_B/x"]', "entry 1: s3://A_B/x: 'A_B' is not a bucket name"),
    ("to = [3]", "[offsite] to, entry 1 is not a location"),
    ('to = ["/mnt/a"]\nwindow = "25:00-06:00"', "[offsite] window: '25:00-06:00'"),
    ('to = ["/mnt/a"]\nbwlimit = "fast"', "[offsite] bwlimit: 'fast': 'fast' is not a rate"),
    ('to = ["/mnt/a"]\nbw_limit = "10M"', "[offsite] has no key 'bw_limit'"),
    ('to = ["s3://b-b/x"]\naws_secret_access_key = "s"', "secrets are not kept in agent.toml"),
    ('to = ["s3://b-b/x"]\ncredentials = "/nonexistent/creds"', "credentials = '/nonexistent"),
    ('to = ["s3://b-b/x"]\nendpoint = "localhost:9000"', "is not an http:// or https:// URL"),
    ('to = [{ location = "/mnt/a", endpoint = "http://x" }]', "are for s3:// targets"),
    ('to = ["REPO"]', "is the repository itself"),
    ('to = ["/mnt/a"]\nevery = 0', "[offsite] every = 0 is too short: at least 1 s"),
    ('to = ["/mnt/a"]\nretry = 0.1', "[offsite] retry = 0.1 is too short: at least 0.5 s"),
]


@pytest.mark.parametrize(("offsite", "said"), BAD, ids=[b[1][:30] for b in BAD])
def test_a_bad_offsite_value_is_refused_at_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], offsite: str, said: str
) -> None:
    """Refused before anything starts, naming the file and the key."""
    _repository(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    (home / "a.txt").write_text("not journaled: the agent does not start")
    config = _config(tmp_path, home, offsite.replace("REPO", str(tmp_path / "repo")) + "\n")
    capsys.readouterr()
    assert run_cli("agent", "--config", str(config), "--once") == 2
    err = capsys.readouterr().err
    assert f"{config}: [offsite]" in err and said in err
    assert not (tmp_path / "state").exists()
    assert Repository.open(tmp_path / "repo", PASSPHRASE).snapshot_ids() == []
