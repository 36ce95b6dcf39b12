"""ext4 in depth: metadata kept, damaged chunks named, hostile names, stale mounts, the CLI."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging.errors import HourglassError
from imaging.files import restore as restore_module
from imaging.files import session as session_module
from imaging.files.browse import SnapshotBrowser
from imaging.files.restore import restore_files
from imaging.files.session import Session, sessions
from imaging.files.versions import fiemap
from imaging.image.backup import backup_path
from imaging.mounts.mountinfo import is_mounted
from imaging.repository.store import Repository
from tests.conftest import PASSPHRASE
from tests.imaging.files.fsimages import make_fs, writable
from tests.support import MiB, run_cli, sh

pytestmark = [pytest.mark.integration, pytest.mark.root]

MTIME = 1_650_000_000_123_456_789


def xattrs(path: Path) -> dict[str, bytes]:
    return {
        name: os.getxattr(path, name, follow_symlinks=False)
        for name in os.listxattr(path, follow_symlinks=False)
    }


def test_metadata_is_kept(tmp_path: Path, repo: Repository) -> None:
    image = make_fs("ext4", tmp_path / "meta.img")
    with writable("ext4", image, tmp_path / "rw") as mnt:
        home = mnt / "home" / "ann"
        home.mkdir(parents=True)
        (home / "letter.txt").write_text("Dear Bob\n")
        os.setxattr(home / "letter.txt", "user.tag", b"important")
        sh("setfacl", "-m", "u:1234:rw", home / "letter.txt")
        sh("setfacl", "-d", "-m", "g:2345:rx", home)
        os.chown(home / "letter.txt", 1000, 1000)
        os.chmod(home / "letter.txt", 0o640)
        (home / "tool").write_bytes(b"#!/bin/sh\n")
        os.chown(home / "tool", 1000, 100)
        os.chmod(home / "tool", 0o4755)
        os.symlink("letter.txt", home / "relative-link")
        os.symlink("/etc/passwd", home / "absolute-link")
        os.link(home / "letter.txt", home / "hardlink")
        (home / "sub").mkdir()
        os.link(home / "letter.txt", home / "sub" / "other-hardlink")
        with open(home / "sparse.bin", "wb") as f:
            f.write(b"start")
            f.seek(20 * MiB)
            f.write(b"end")
        os.mkfifo(home / "fifo")
        for path in [*home.rglob("*"), home]:
            os.utime(path, ns=(MTIME, MTIME), follow_symlinks=False)
        os.chown(home, 1000, 1000)
        os.chmod(home, 0o750)
        os.utime(home, ns=(MTIME, MTIME))
        expected = {str(p.relative_to(mnt / "home")): os.lstat(p) for p in [home, *home.rglob("*")]}
        expected_xattrs = xattrs(home / "letter.txt")
        expected_dir_xattrs = xattrs(home)
    snapshot = backup_path(repo, image)
    dest = tmp_path / "dest"
    result = restore_files(repo, snapshot, None, ["/home/ann"], dest)
    assert result.ok, result.damaged
    assert not [w for w in result.warnings if "not restored" in w], result.warnings
    for rel, st in expected.items():
        got = os.lstat(dest / rel)
        assert stat.S_IFMT(got.st_mode) == stat.S_IFMT(st.st_mode), rel
        assert stat.S_IMODE(got.st_mode) == stat.S_IMODE(st.st_mode), rel
        assert (got.st_uid, got.st_gid) == (st.st_uid, st.st_gid), rel
        assert got.st_mtime_ns == MTIME, rel
        assert got.st_size == st.st_size or stat.S_ISDIR(st.st_mode), rel
    ann = dest / "ann"
    assert os.readlink(ann / "relative-link") == "letter.txt"
    assert os.readlink(ann / "absolute-link") == "/etc/passwd"
    inode = os.lstat(ann / "letter.txt").st_ino
    assert os.lstat(ann / "hardlink").st_ino == inode
    assert os.lstat(ann / "sub" / "other-hardlink").st_ino == inode
    assert xattrs(ann / "letter.txt") == expected_xattrs
    assert "system.posix_acl_access" in expected_xattrs
    assert xattrs(ann) == expected_dir_xattrs
    sparse = os.lstat(ann / "sparse.bin")
    assert sparse.st_blocks * 512 < 1 * MiB  # the hole stayed a hole
    with open(ann / "sparse.bin", "rb") as f:
        assert f.read(5) == b"start"
        f.seek(20 * MiB)
        assert f.read() == b"end"
    assert stat.S_ISFIFO(os.lstat(ann / "fifo").st_mode)

    # Restoring again keeps what is there and renames what comes back.
    again = restore_files(repo, snapshot, None, ["/home/ann/letter.txt"], ann)
    assert len(again.renamed) == 1
    renamed = ann / again.renamed[0][1]
    assert renamed.name.startswith("letter.restored-") and renamed.suffix == ".txt"
    assert renamed.read_text() == "Dear Bob\n"
    (ann / "letter.txt").write_text("changed since\n")
    restore_files(repo, snapshot, None, ["/home/ann/letter.txt"], ann, overwrite=True)
    assert (ann / "letter.txt").read_text() == "Dear Bob\n"


def test_damaged_chunk_names_the_file_and_the_others_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    image = make_fs("ext4", tmp_path / "damage.img")
    good = os.urandom(9 * MiB)
    with writable("ext4", image, tmp_path / "rw") as mnt:
        (mnt / "bad.bin").write_bytes(os.urandom(9 * MiB))
        (mnt / "good.bin").write_bytes(good)
        os.sync()
        with open(mnt / "bad.bin", "rb") as f:
            extents = fiemap(f.fileno(), 9 * MiB)
        with open(mnt / "good.bin", "rb") as f:
            good_extents = fiemap(f.fileno(), 9 * MiB)
    assert extents and good_extents
    repo = Repository.init(tmp_path / "repo", passphrase=PASSPHRASE)
    snapshot = backup_path(repo, image)
    ids = repo.load_index(snapshot, "data")
    good_blocks = {
        b
        for _, p, n, _ in good_extents
        for b in range(p // repo.block_size, (p + n - 1) // repo.block_size + 1)
    }
    block = next(
        b
        for _, p, n, _ in extents
        for b in range(p // repo.block_size, (p + n - 1) // repo.block_size + 1)
        if b not in good_blocks and b != 0
    )
    chunk = repo.chunk_path(ids[block])
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))

    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    dest = tmp_path / "dest"
    rc = run_cli(
        "files",
        "restore",
        "--repo",
        str(repo.path),
        "latest",
        "/bad.bin",
        "/good.bin",
        "--to",
        str(dest),
        "--progress",
        "none",
    )
    err = capsys.readouterr().err
    assert rc == 3
    assert "DAMAGED /bad.bin: unreadable bytes" in err
    assert chunk.name in err
    assert "good.bin" not in err
    assert (dest / "good.bin").read_bytes() == good
    assert (dest / "bad.bin").stat().st_size == 9 * MiB


@pytest.mark.parametrize("kind", ["ext4", "xfs"])
def test_large_files_are_read_from_the_repository_directly(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A large file is copied from its extents (FIEMAP) without going through the mounted
    filesystem; data, holes and allocated-but-unwritten ranges come back as they were, and
    the same as the mounted way gives."""
    image = make_fs(kind, tmp_path / f"{kind}.img")
    with writable(kind, image, tmp_path / "rw") as mnt:
        with open(mnt / "big.bin", "wb") as f:
            f.write(os.urandom(6 * MiB + 123))  # ends mid-block
            f.seek(10 * MiB)
            f.write(os.urandom(3 * MiB))  # after a hole
        os.truncate(mnt / "big.bin", 16 * MiB)
        fd = os.open(mnt / "big.bin", os.O_RDWR)
        try:
            os.posix_fallocate(fd, 14 * MiB, 2 * MiB)  # unwritten: reads as zeros
        finally:
            os.close(fd)
        expected = (mnt / "big.bin").read_bytes()
    snapshot = backup_path(repo, image)

    calls: list[int] = []
    mounted_way = restore_module._Copier._copy_data

    def spy(self: object, src: int, dst: int, size: int) -> list[tuple[int, int]]:
        calls.append(size)
        return mounted_way(self, src, dst, size)  # type: ignore[arg-type]

    monkeypatch.setattr(restore_module._Copier, "_copy_data", spy)
    result = restore_files(repo, snapshot, None, ["/big.bin"], tmp_path / "direct")
    assert result.ok, result.damaged
    assert calls == [], "the large file went the mounted way"
    direct = tmp_path / "direct" / "big.bin"
    assert direct.read_bytes() == expected
    assert os.stat(direct).st_blocks * 512 < 12 * MiB, "holes were filled"

    monkeypatch.setattr(restore_module, "DIRECT_MIN", 1 << 62)
    restore_files(repo, snapshot, None, ["/big.bin"], tmp_path / "mounted")
    assert calls == [16 * MiB]
    assert (tmp_path / "mounted" / "big.bin").read_bytes() == expected


def test_crafted_names_cannot_escape(tmp_path: Path, repo: Repository) -> None:
    image = make_fs("ext4", tmp_path / "evil.img", "-O", "^metadata_csum,^dir_index,^has_journal")
    with writable("ext4", image, tmp_path / "rw") as mnt:
        (mnt / "slash").mkdir()
        (mnt / "slash" / "fine.txt").write_text("fine\n")
        (mnt / "slash" / "PLACEHOLDER-ONE-0").write_text("escape via slash\n")
        (mnt / "dots").mkdir()
        (mnt / "dots" / "fine.txt").write_text("fine\n")
        (mnt / "dots" / "P2").write_text("dot dot\n")
        (mnt / "nul").mkdir()
        (mnt / "nul" / "fine.txt").write_text("fine\n")
        (mnt / "nul" / "N3").write_text("nul name\n")
    raw = image.read_bytes()
    assert raw.count(b"PLACEHOLDER-ONE-0") == 1
    raw = raw.replace(b"PLACEHOLDER-ONE-0", b"../../../../pwned")
    assert raw.count(b"\x02\x01P2") == 1
    raw = raw.replace(b"\x02\x01P2", b"\x02\x01..")  # name_len 2, type 1 (file): "P2" -> ".."
    # "N3" -> NUL + "N": the kernel lists it (it checks only for "/" and length 0) and
    # readdir's C string ends at the NUL, so Python sees the name "": of the crafted
    # names, the one that gets past the kernel and os.scandir to Hourglass's own check.
    assert raw.count(b"\x02\x01N3") == 1
    raw = raw.replace(b"\x02\x01N3", b"\x02\x01\x00N")
    image.write_bytes(raw)
    snapshot = backup_path(repo, image)
    dest = tmp_path / "a" / "b" / "c" / "dest"
    result = restore_files(repo, snapshot, None, ["/slash", "/dots", "/nul"], dest)
    # A name holding "/": the kernel refuses to list it (EIO); what came before restores.
    assert sorted(os.listdir(dest / "slash")) == ["fine.txt"]
    assert [d.path for d in result.damaged] == ["/slash"]
    # A file named "..": never listed as an entry (and refused by name if it were).
    assert sorted(os.listdir(dest / "dots")) == ["fine.txt"]
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == b"dot dot\n"]
    # The empty name: refused by safe_name (skipped with a warning), the rest restores.
    assert sorted(os.listdir(dest / "nul")) == ["fine.txt"]
    assert result.warnings == ["skipped '/nul/': the name is not safe"]
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == b"nul name\n"]
    assert not list(tmp_path.rglob("pwned"))
    assert sorted(os.listdir(tmp_path / "a" / "b" / "c")) == ["dest"]
    with pytest.raises(HourglassError):
        restore_files(repo, snapshot, None, ["/dots/../../etc"], dest)
    # Browsing the directory (`files ls`, the app) leaves the entry out too.
    with SnapshotBrowser(repo, snapshot, None) as browser:
        assert [e.name for e in browser.listdir("/nul")] == ["fine.txt"]


def test_damaged_filesystem_names_the_partition(tmp_path: Path, repo: Repository) -> None:
    image = make_fs("ext4", tmp_path / "broken.img")
    with open(image, "r+b") as f:  # group descriptors (1 KiB blocks: block 2) turned to junk
        f.seek(2048)
        f.write(b"\xa5" * 2048)
    snapshot = backup_path(repo, image)
    with pytest.raises(HourglassError) as caught:
        restore_files(repo, snapshot, None, ["/x"], tmp_path / "dest")
    message = str(caught.value)
    assert "image data of snapshot" in message and "ext4" in message
    assert "Cannot mount" in message
    assert not [s for s in sessions() if s.repo == str(repo.path)], "the session was cleaned up"


@pytest.fixture
def persistent_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The sessions of `hourglass mount` are recorded under tmp_path, not in the machine's
    /run/hourglass/mounts: a session started meanwhile by a test on the other worker never
    cleans up this test's stale one (which this test must see its own next mount do).
    Whatever a failing test left mounted is torn down."""
    monkeypatch.setattr(session_module, "RUN_DIR", tmp_path / "sessions")
    yield
    for state in sessions():
        session_module.teardown_recorded(state.path)


@pytest.mark.usefixtures("persistent_mounts")
def test_mount_umount_and_stale_cleanup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    image = make_fs("ext4", tmp_path / "m.img")
    with writable("ext4", image, tmp_path / "rw") as mnt:
        (mnt / "hello.txt").write_text("hello\n")
    repo = Repository.init(tmp_path / "repo", passphrase=PASSPHRASE)
    backup_path(repo, image)
    first = tmp_path / "first"
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)  # read once, then dropped
    assert run_cli("mount", "--repo", str(repo.path), "latest", str(first)) == 0
    assert (first / "hello.txt").read_text() == "hello\n"
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)  # read once, then dropped
    assert run_cli("files", "ls", "--repo", str(repo.path), "latest", "--json") == 0, (
        capsys.readouterr()
    )
    listing = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert "hello.txt" in [e["name"] for e in listing]
    assert run_cli("umount", str(first)) == 0
    assert not is_mounted(first)
    assert not [s for s in sessions() if s.repo == str(repo.path)]

    # A killed server leaves a broken mount; the next mount cleans it up.
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)  # read once, then dropped
    assert run_cli("mount", "--repo", str(repo.path), "latest:1", str(first)) == 0
    (state,) = [s for s in sessions() if s.repo == str(repo.path)]
    loop = state.mounts[0].loop
    assert state.server_pid is not None
    os.kill(state.server_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while session_module.alive(state.server_pid, state.server_start):
        assert time.monotonic() < deadline, "the killed server is still alive"
        time.sleep(0.05)
    second = tmp_path / "second"
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)  # read once, then dropped
    assert run_cli("mount", "--repo", str(repo.path), "latest", str(second)) == 0
    assert "Cleaned up a stale mount" in capsys.readouterr().err
    assert not is_mounted(first)
    assert loop is not None and not session_module.serves(loop, state.mounts[0].view)
    assert not state.directory.exists()
    assert (second / "hello.txt").read_text() == "hello\n"
    assert run_cli("umount", str(second)) == 0
    assert run_cli("umount", str(second)) == 5


def test_killed_owner_is_cleaned_up(tmp_path: Path, repo: Repository) -> None:
    image = make_fs("ext4", tmp_path / "k.img")
    snapshot = backup_path(repo, image)
    child = subprocess.Popen(
        ["sleep", "60"]
    )  # stands in for a `hourglass files` process that will be killed
    session = Session(repo)
    session.start()
    mounted = session.mount(snapshot, "data")
    assert session.state is not None
    session.state.owner_pid = child.pid
    session.state.owner_start = session_module.start_time(child.pid)
    session.state.save()
    directory = session.state.directory
    child.kill()
    child.wait()
    session.detach()
    cleaned = session_module.cleanup_stale()
    assert str(mounted.path) in cleaned
    assert not is_mounted(mounted.path)
    assert not directory.exists()


def test_server_tears_down_when_its_owner_is_killed(tmp_path: Path) -> None:
    image = make_fs("ext4", tmp_path / "o.img")
    repo = Repository.init(tmp_path / "repo", encryption="none")
    backup_path(repo, image)
    ready = tmp_path / "ready"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from imaging.repository.store import Repository\n"
        "from imaging.files.browse import SnapshotBrowser\n"
        f"repo = Repository.open({str(repo.path)!r})\n"
        "browser = SnapshotBrowser(repo, 'latest')\n"
        "browser.open()\n"
        f"Path({str(ready)!r}).write_text(browser.root)\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(200):
            if ready.exists():
                break
            time.sleep(0.05)
        root = ready.read_text()
        assert is_mounted(root)
        owner.kill()
        owner.wait()
        for _ in range(100):  # the server sees its stdin close and unmounts what is on top
            if not is_mounted(root):
                break
            time.sleep(0.05)
        assert not is_mounted(root)
    finally:
        owner.kill()
        session_module.cleanup_stale()
