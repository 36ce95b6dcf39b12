"""A PC recorded for the restores as of a second: a real GPT disk (a root ext4 whose
/etc/fstab mounts a data ext4 by UUID), imaged offline as the appliance does; then the data
partition mounted where its fstab says and the real agent (fanotify) recording changes at
known seconds. Shared by the engine's tests and the app's."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from imaging.agent.config import AgentConfig
from imaging.jobs.agent import run_agent
from imaging.journal.records import Entry
from imaging.journal.segments import load_segments, ordered_events, replay
from imaging.repository.store import Repository
from tests.imaging.agent.test_agent import _next_second, _Running, _wait
from tests.imaging.disks import helpers
from tests.support import run_cli, sh

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


def record(tmp: Path, repo_dir: Path, passphrase_file: Path | None = None) -> Recorded:
    """The PC's disk image in ``tmp``, its image and journal in the repository at
    ``repo_dir`` (made already; ``passphrase_file`` opens it)."""
    secret = passphrase_file.read_text().strip() if passphrase_file else None

    def _state(repo: Path) -> dict[str, Entry]:
        return replay(ordered_events(load_segments(Repository.open(repo, passphrase=secret))))

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
        key = ["--passphrase-file", str(passphrase_file)] if passphrase_file else []
        assert run_cli("backup", "--repo", repo_dir, *key, dev) == 0
        seconds["image"] = _second(time.time())
        _next_second()
        with helpers.mounted_fs(data_dev, "ext4", data):
            config = AgentConfig(
                location=str(repo_dir),
                passphrase_file=str(passphrase_file) if passphrase_file else None,
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
    return Recorded(repo_dir, image, data, seconds)


def files_on(dev: str, where: Path) -> dict[str, str]:
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


@contextlib.contextmanager
def blank_disk(tmp: Path) -> Iterator[str]:
    """A loop device over an empty image the size of the recorded PC's disk."""
    image = tmp / "new-disk.img"
    sh("truncate", "-s", f"{DISK_MIB}M", image)
    with helpers.attached(image) as device:
        yield device
